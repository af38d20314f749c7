import Checkpoint
import Conversion
import Dispatch
import QuantKernels
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Options of `ckpt diff`.
public struct DiffOptions: Sendable {
  /// Threads for decoding and comparing.
  public var jobs: Int
  /// One relative-error limit for every tensor instead of ``Tolerance``'s per-encoding bounds.
  public var failAbove: Double?
  /// Called once with the stored bytes to read (both sides).
  public var started: (@Sendable (Int) -> Void)?
  /// Called with stored bytes done after each tensor.
  public var progress: (@Sendable (Int) -> Void)?

  public init(
    jobs: Int = Parallel.defaultJobs, failAbove: Double? = nil, started: (@Sendable (Int) -> Void)? = nil,
    progress: (@Sendable (Int) -> Void)? = nil
  ) {
    self.jobs = jobs
    self.failAbove = failAbove
    self.started = started
    self.progress = progress
  }
}

/// A tensor of A and its match in B.
public struct TensorPair: Sendable {
  public let a: LogicalTensor
  public let b: LogicalTensor
}

/// Matching and comparing two checkpoints tensor by tensor (`ckpt diff`).
public enum CheckpointDiff {
  /// Pairs A's tensors with B's by key (names without `language_model.`), in A's order.
  public static func match(_ a: WeightCatalog, _ b: WeightCatalog) -> (
    pairs: [TensorPair], onlyInA: [UnmatchedTensor], onlyInB: [UnmatchedTensor], mismatched: [UnmatchedTensor]
  ) {
    var inB: [String: LogicalTensor] = [:]
    for t in b.tensors { inB[t.key] = t }
    var pairs: [TensorPair] = []
    var onlyA: [UnmatchedTensor] = []
    var mismatched: [UnmatchedTensor] = []
    var seen = Set<String>()
    for t in a.tensors {
      guard let u = inB[t.key] else {
        onlyA.append(UnmatchedTensor(name: t.key, shard: t.shard, reason: "only in A (\(t.encoding.label) \(t.shape))"))
        continue
      }
      seen.insert(t.key)
      if t.shape != u.shape {
        mismatched.append(UnmatchedTensor(name: t.key, shard: t.shard, reason: "shape \(t.shape) in A, \(u.shape) in B (\(u.shard))"))
        continue
      }
      pairs.append(TensorPair(a: t, b: u))
    }
    let onlyB = b.tensors.filter { !seen.contains($0.key) }.map {
      UnmatchedTensor(name: $0.key, shard: $0.shard, reason: "only in B (\($0.encoding.label) \($0.shape))")
    }
    for s in a.skipped { mismatched.append(UnmatchedTensor(name: s.name, shard: s.shard, reason: "A: " + s.reason)) }
    for s in b.skipped { mismatched.append(UnmatchedTensor(name: s.name, shard: s.shard, reason: "B: " + s.reason)) }
    return (pairs, onlyA, onlyB, mismatched)
  }

  /// Compares every matched tensor, streaming both sides through memory-mapped
  /// input in row chunks small enough to stay in cache.
  ///
  /// - Returns: One row per pair (in A's order) and the stored bytes read.
  public static func compare(
    _ pairs: [TensorPair], a: WeightCatalog, b: WeightCatalog, options: DiffOptions = DiffOptions()
  ) throws(DiffError) -> (rows: [ComparisonRow], bytes: Int) {
    var readers: [(TensorReader, TensorReader)] = []
    for p in pairs {
      readers.append((try TensorReader(p.a, file: a.files[p.a.shard]!, prepare: false), try TensorReader(p.b, file: b.files[p.b.shard]!, prepare: false)))
    }
    let total = readers.reduce(0) { $0 + $1.0.storedBytes + $1.1.storedBytes }
    options.started?(total)
    var items: [(String, Range<Int>)] = []
    for (ra, rb) in readers {
      // Archived shards are read through their chunks instead (decoded on demand).
      if !a.files[ra.tensor.shard]!.mapping.isStored {
        items += ra.storedRanges.sorted { $0.lowerBound < $1.lowerBound }.map { (a.checkpoint.pathOf(ra.tensor.shard), $0) }
      }
      if !b.files[rb.tensor.shard]!.mapping.isStored {
        items += rb.storedRanges.sorted { $0.lowerBound < $1.lowerBound }.map { (b.checkpoint.pathOf(rb.tensor.shard), $0) }
      }
    }
    let prefetch = Prefetcher(items, window: 512 << 20)
    defer { prefetch.stop() }
    var rows: [ComparisonRow] = []
    var done = 0
    for (ra, rb) in readers {
      try ra.prepare()
      do { try rb.prepare() } catch {
        ra.release()
        throw error
      }
      let stats = compare(ra, rb, jobs: options.jobs)
      ra.release()
      rb.release()
      let t = ra.tensor
      rows.append(ComparisonRow(
        name: t.key, layer: t.layer, kind: t.kind.rawValue, shape: t.shape, encodingA: t.encoding.label,
        encodingB: rb.tensor.encoding.label, stats: stats,
        tolerance: options.failAbove ?? Tolerance.relative(reference: t.encoding, candidate: rb.tensor.encoding)))
      let bytes = ra.storedBytes + rb.storedBytes
      done += bytes
      prefetch.advance(to: done)
      options.progress?(bytes)
    }
    return (rows, done)
  }

  /// Elements per decoded chunk and side: 2 × 256 KiB stays in L2.
  static let chunkElements = 1 << 16

  /// The stats of one pair, on up to `jobs` threads (bands of rows), each
  /// decoding chunk by chunk into its own two buffers.
  public static func compare(_ a: TensorReader, _ b: TensorReader, jobs: Int) -> ErrorStats {
    let rows = a.tensor.rows
    let columns = a.tensor.columns
    precondition(rows == b.tensor.rows && columns == b.tensor.columns, "shapes differ")
    if rows == 0 || columns == 0 { return ErrorStats() }
    let chunkRows = max(1, chunkElements / columns)
    let bands = max(1, min(jobs, rows / chunkRows, a.tensor.elementCount / (1 << 18)))
    let body = { @Sendable (band: Int) -> ErrorStats in
      let r0 = rows * band / bands
      let r1 = rows * (band + 1) / bands
      let capacity = min(chunkRows, r1 - r0) * columns
      let x = UnsafeMutableBufferPointer<Float>.allocate(capacity: capacity)
      let y = UnsafeMutableBufferPointer<Float>.allocate(capacity: capacity)
      defer {
        x.deallocate()
        y.deallocate()
      }
      var s = ErrorStats()
      var r = r0
      while r < r1 {
        let e = min(r1, r + chunkRows)
        let n = (e - r) * columns
        let xs = UnsafeMutableBufferPointer(rebasing: x[0..<n])
        let ys = UnsafeMutableBufferPointer(rebasing: y[0..<n])
        a.decode(rows: r..<e, into: xs)
        b.decode(rows: r..<e, into: ys)
        s.merge(ErrorStats.measure(UnsafeBufferPointer(xs), UnsafeBufferPointer(ys), base: r * columns))
        r = e
      }
      return s
    }
    if bands == 1 { return body(0) }
    let results = Mutex([ErrorStats](repeating: ErrorStats(), count: bands))
    DispatchQueue.concurrentPerform(iterations: bands) { band in
      let s = body(band)
      results.withLock { $0[band] = s }
    }
    return results.withLock { $0.reduce(ErrorStats()) { $0.merged($1) } }
  }
}
