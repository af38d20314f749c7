import Crypto
import Dispatch
import SafeTensors
import Verification
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The output of one converted shard: the producer (the converter) fills a
/// ring of page-aligned buffers; one thread hashes each full buffer (SHA-256,
/// in order) while another writes it with `pwrite(2)`, bypassing the page
/// cache (`O_DIRECT`) where the file system allows.
///
/// Why: on a 2-core box, computing, hashing and writing one after the other
/// costs their sum, and re-reading a finished 5 GB shard to hash it costs as
/// much again. Here the three overlap, the digest comes free with the write,
/// and with `O_DIRECT` the kernel does not copy every output byte into the page
/// cache (measured in `Docs/PERFORMANCE.md`). Memory is the ring: 4 × 32 MiB.
///
/// Errors from the writer thread are kept and thrown by the next ``append(_:)``
/// or by ``finish()``; the file is then incomplete and the caller removes it.
public final class PipelinedSink: SafeTensorsWriter.ByteSink, @unchecked Sendable {
  /// Size of each ring buffer.
  public static let bufferSize = 32 << 20
  /// Number of ring buffers.
  public static let bufferCount = 4
  /// Alignment of buffers, offsets and lengths for `O_DIRECT`.
  static let alignment = 4096

  #if os(Linux) && arch(x86_64)
    static let directFlag: Int32 = 0o40000
  #elseif os(Linux) && arch(arm64)
    static let directFlag: Int32 = 0o200000
  #else
    static let directFlag: Int32 = 0
  #endif

  /// The file being written.
  public let path: String
  /// Whether writes bypass the page cache.
  public private(set) var direct: Bool
  /// The SHA-256 of every byte appended, as lowercase hex; set by ``finish()``.
  public private(set) var sha256: String?

  private var fd: Int32
  private let buffers: [UnsafeMutableRawPointer]
  // Producer state (the calling thread only).
  private var current: Int? = nil
  private var fill = 0
  private var sequence = 0
  private var offset = 0
  // Shared state.
  private let free = DispatchSemaphore(value: PipelinedSink.bufferCount)
  private let pending = Mutex<[Int]>(Array(repeating: 0, count: PipelinedSink.bufferCount))
  private let failure = Mutex<SafeTensorsError?>(nil)
  private let hashQueue = DispatchQueue(label: "ckpt.sink.hash")
  private let writeQueue = DispatchQueue(label: "ckpt.sink.write")
  private var hasher = SHA256()  // hashQueue only
  private let hashing: Bool

  /// Creates `path` exclusively.
  ///
  /// - Parameter direct: Try `O_DIRECT` (falls back to buffered writes when the
  ///   file system refuses it).
  /// With `hashing` false, ``sha256`` stays `nil` and no thread hashes (for
  /// writers that check their data otherwise, such as `ckpt decompress`).
  public init(path: String, direct: Bool = true, hashing: Bool = true) throws(SafeTensorsError) {
    self.path = path
    self.hashing = hashing
    var fd: Int32 = -1
    var isDirect = false
    if direct && Self.directFlag != 0 {
      fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | Self.directFlag, 0o644)
      isDirect = fd >= 0
      if fd < 0 && errno != EINVAL { throw SafeTensorsError(file: path, kind: .io(operation: "create", errno: errno)) }
    }
    if fd < 0 {
      fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
      if fd < 0 { throw SafeTensorsError(file: path, kind: .io(operation: "create", errno: errno)) }
    }
    self.fd = fd
    self.direct = isDirect
    buffers = (0..<Self.bufferCount).map { _ in
      UnsafeMutableRawPointer.allocate(byteCount: Self.bufferSize, alignment: Self.alignment)
    }
  }

  deinit {
    // Abandoned (or finished): let the queues drain before the buffers go.
    hashQueue.sync {}
    writeQueue.sync {}
    // A buffer taken but never submitted still holds a count of `free`;
    // libdispatch traps on disposing a semaphore below its initial value.
    if current != nil { free.signal() }
    if fd >= 0 { close(fd) }
    for b in buffers { b.deallocate() }
  }

  public func append(_ bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
    if let e = failure.withLock({ $0 }) { throw e }
    var rest = bytes
    while !rest.isEmpty {
      let slot = acquire()
      let take = min(rest.count, Self.bufferSize - fill)
      (buffers[slot] + fill).copyMemory(from: rest.baseAddress!, byteCount: take)
      fill += take
      rest = UnsafeRawBufferPointer(rebasing: rest[take...])
      if fill == Self.bufferSize { submit() }
    }
  }

  public func finish() throws(SafeTensorsError) {
    if fill > 0 { submit() }
    hashQueue.sync {}
    writeQueue.sync {}
    if let e = failure.withLock({ $0 }) { throw e }
    if ftruncate(fd, off_t(offset)) != 0 { throw io("ftruncate") }
    if fsync(fd) != 0 { throw io("fsync") }
    let r = close(fd)
    fd = -1
    if r != 0 { throw io("close") }
    sha256 = hashing ? hashQueue.sync { Hashing.hex(hasher.finalize()) } : nil
  }

  /// Bytes appended so far.
  public var count: Int { offset + fill }

  private func acquire() -> Int {
    if let c = current { return c }
    free.wait()
    let slot = sequence % Self.bufferCount
    current = slot
    fill = 0
    return slot
  }

  /// Hands the current buffer to the hash and write threads.
  private func submit() {
    guard let slot = current else { return }
    let length = fill
    let at = offset
    nonisolated(unsafe) let buffer = buffers[slot]
    pending.withLock { $0[slot] = 2 }
    offset += length
    sequence += 1
    current = nil
    fill = 0
    hashQueue.async {
      if self.hashing { self.hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffer, count: length)) }
      self.release(slot)
    }
    writeQueue.async {
      self.write(buffer, length: length, at: at)
      self.release(slot)
    }
  }

  private func release(_ slot: Int) {
    let last = pending.withLock { p in
      p[slot] -= 1
      return p[slot] == 0
    }
    if last { free.signal() }
  }

  /// Writes one buffer (writer thread). A short last buffer is padded with
  /// zeros to the alignment for `O_DIRECT`; ``finish()`` truncates the file.
  private func write(_ buffer: UnsafeMutableRawPointer, length: Int, at: Int) {
    if failure.withLock({ $0 != nil }) { return }
    var total = length
    if direct && length % Self.alignment != 0 {
      total = (length + Self.alignment - 1) / Self.alignment * Self.alignment
      (buffer + length).initializeMemory(as: UInt8.self, repeating: 0, count: total - length)
    }
    var done = 0
    while done < total {
      let n = pwrite(fd, buffer + done, total - done, off_t(at + done))
      if n < 0 {
        let e = errno
        if e == EINTR { continue }
        if e == EINVAL && direct {
          // The file system takes O_DIRECT at open but not these writes: go buffered.
          _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~Self.directFlag)
          direct = false
          total = length
          continue
        }
        failure.withLock { $0 = SafeTensorsError(file: path, kind: .io(operation: "write", errno: e)) }
        return
      }
      done += n
    }
  }

  private func io(_ op: String) -> SafeTensorsError {
    SafeTensorsError(file: path, kind: .io(operation: op, errno: errno))
  }
}
