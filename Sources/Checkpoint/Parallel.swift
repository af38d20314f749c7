import Dispatch
import Synchronization

/// Small structured helpers for running independent work on several cores.
public enum Parallel {
  /// The number of cores to use by default.
  public static var defaultJobs: Int {
    #if canImport(Glibc)
      return max(1, Int(sysconfCores()))
    #else
      return 4
    #endif
  }

  /// Calls `body(i)` for every `i` in `0..<count` on up to `jobs` threads and
  /// returns the results in index order.
  public static func map<T: Sendable>(_ count: Int, jobs: Int = defaultJobs, _ body: @Sendable (Int) -> T) -> [T] {
    if count == 0 { return [] }
    let results = Mutex<[T?]>(Array(repeating: nil, count: count))
    let next = Atomic<Int>(0)
    let workers = max(1, min(jobs, count))
    DispatchQueue.concurrentPerform(iterations: workers) { _ in
      while true {
        let i = next.add(1, ordering: .relaxed).oldValue
        if i >= count { break }
        let r = body(i)
        results.withLock { $0[i] = r }
      }
    }
    return results.withLock { $0.map { $0! } }
  }
}

#if canImport(Glibc)
  import Glibc
  private func sysconfCores() -> Int { sysconf(Int32(_SC_NPROCESSORS_ONLN)) }
#endif
