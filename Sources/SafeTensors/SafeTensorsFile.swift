#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A read-only memory mapping of a whole file, unmapped when released.
///
/// Pages are read from disk on first touch. Long scans should call
/// ``release(_:)`` on ranges they are done with, so that touched pages of a
/// large shard do not accumulate in the process's resident set.
///
/// A path in a stored form (``VirtualFiles``, e.g. `NAME.safetensors.zst`)
/// maps the file it stands for: address space is reserved for all of it and
/// only the ranges readers ``prepare(_:)`` are decoded into it. Readers call
/// ``prepare(_:)`` before touching a range and ``release(_:)`` when done; on
/// a plain file ``prepare(_:)`` does nothing.
///
/// - Warning: If another process truncates the file while it is mapped,
///   touching the lost pages raises `SIGBUS`. Inputs are never written by
///   CheckpointKit; do not modify them while it runs.
public final class MappedFile: @unchecked Sendable {
  // @unchecked: the mapping is read-only (or, for a stored form, written
  // only by its source under the source's per-piece locks) and its
  // properties are immutable after init.
  /// The path that was mapped.
  public let path: String
  /// The mapped bytes.
  private let base: UnsafeRawPointer?
  /// The file's size in bytes (for a stored form: of the file it stands for).
  public let count: Int
  /// The decoder of a stored form, or `nil` for a plain file.
  private let source: (any VirtualFileSource)?

  /// Maps the file at `path` read-only, or, for a stored form, reserves
  /// memory for the file it stands for.
  ///
  /// The corresponding C function is `mmap`.
  ///
  /// - Parameter decoding: `false` maps the bytes on disk even for a stored
  ///   form (what its reader does).
  public init(path: String, decoding: Bool = true) throws(SafeTensorsError) {
    self.path = path
    if decoding && VirtualFiles.isStored(path) {
      guard let open = VirtualFiles.opener(for: path) else {
        throw SafeTensorsError(
          file: path, kind: .storage(code: "unsupported-archive", tensor: nil, message: "a compressed shard, and this build registers no reader for it"))
      }
      let source = try open(path)
      self.source = source
      count = source.count
      if count == 0 {
        base = nil
        return
      }
      // Private anonymous memory, committed page by page as pieces are decoded.
      guard let p = mmap(nil, count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), p != MAP_FAILED else {
        throw SafeTensorsError(file: path, kind: .io(operation: "mmap", errno: errno))
      }
      base = UnsafeRawPointer(p)
      return
    }
    source = nil
    let f = try SystemFile(readingAt: path)
    let size = try f.size()
    self.count = size
    if size == 0 {
      base = nil
      return
    }
    guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, f.fd, 0), p != MAP_FAILED else {
      throw SafeTensorsError(file: path, kind: .io(operation: "mmap", errno: errno))
    }
    base = UnsafeRawPointer(p)
  }

  deinit {
    if let base { munmap(UnsafeMutableRawPointer(mutating: base), count) }
  }

  /// Whether the file is a stored form decoded on demand.
  public var isStored: Bool { source != nil }

  /// Makes `range` readable: decodes the pieces of a stored form that cover
  /// it and pins them until ``release(_:)``. Does nothing on a plain file.
  ///
  /// - Throws: ``SafeTensorsError`` when a stored piece is damaged.
  public func prepare(_ range: Range<Int>) throws(SafeTensorsError) {
    guard let source, let base, !range.isEmpty else { return }
    precondition(range.lowerBound >= 0 && range.upperBound <= count, "range outside the mapping")
    try source.materialize(range, into: UnsafeMutableRawPointer(mutating: base))
  }

  /// Prepares every range, or none: when one fails, those prepared before it
  /// are released and the error is rethrown.
  public func prepare(all ranges: [Range<Int>]) throws(SafeTensorsError) {
    for (k, r) in ranges.enumerated() {
      do { try prepare(r) } catch {
        for done in ranges[..<k] { release(done) }
        throw error
      }
    }
  }

  /// Calls `body` with the bytes in `range`.
  ///
  /// - Precondition: `range` lies within the file.
  /// - Warning: Do not escape the pointer from the closure. On a stored form,
  ///   `range` must have been prepared.
  public func withBytes<R, E: Error>(
    _ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws(E) -> R
  ) throws(E) -> R {
    precondition(range.lowerBound >= 0 && range.upperBound <= count, "range outside the mapping")
    guard let base else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
    return try body(UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count))
  }

  /// Reads `range` once: prepares it, calls `body` with its bytes, then
  /// releases it.
  public func withPreparedBytes<R>(
    _ range: Range<Int>, _ body: (UnsafeRawBufferPointer) -> R
  ) throws(SafeTensorsError) -> R {
    try prepare(range)
    defer { release(range) }
    return withBytes(range, body)
  }

  /// Tells the kernel the mapping will be read sequentially (`madvise`).
  public func adviseSequential() {
    guard let base, source == nil else { return }
    _ = madvise(UnsafeMutableRawPointer(mutating: base), count, MADV_SEQUENTIAL)
  }

  /// Drops the resident pages wholly inside `range` from this process
  /// (`madvise(MADV_DONTNEED)`); they are read again if touched later.
  /// On a stored form: unpins the pieces overlapping `range`, dropping those
  /// no reader pins any more (they must be prepared again before reading).
  public func release(_ range: Range<Int>) {
    guard let base else { return }
    if let source {
      let r = max(0, range.lowerBound)..<min(count, max(range.upperBound, range.lowerBound))
      if !r.isEmpty { source.release(r, base: UnsafeMutableRawPointer(mutating: base)) }
      return
    }
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let lo = (range.lowerBound + page - 1) / page * page
    let hi = min(range.upperBound, count) / page * page
    guard hi > lo else { return }
    _ = madvise(UnsafeMutableRawPointer(mutating: base + lo), hi - lo, MADV_DONTNEED)
  }
}

/// A validated safetensors file whose tensor data is memory-mapped.
///
/// Tensor data is handed out zero-copy inside closures. The data buffer is not
/// assumed to be aligned: read elements with `loadUnaligned` or copy them.
public final class SafeTensorsFile: Sendable {
  /// The file's path.
  public let path: String
  /// The validated header.
  public let header: SafeTensorsHeader
  /// The mapping of the whole file.
  public let mapping: MappedFile

  /// Opens, validates and maps the file at `path`.
  ///
  /// - Throws: ``SafeTensorsError`` for the first problem in the header, or
  ///   when the file cannot be read.
  public init(path: String) throws(SafeTensorsError) {
    let mapping = try MappedFile(path: path)
    let (header, problems) = try SafeTensorsHeader.validate(fileSize: mapping.count) { (range) throws(SafeTensorsError) in
      try mapping.withPreparedBytes(range) { Array($0) }
    }
    if let first = problems.first { throw SafeTensorsError(file: path, kind: first) }
    self.path = path
    self.header = header!
    self.mapping = mapping
  }

  /// The tensors in data order.
  public var tensors: [TensorInfo] { header.tensors }

  /// The tensor named `name`.
  public func info(_ name: String) throws(SafeTensorsError) -> TensorInfo {
    guard let t = header.tensor(named: name) else {
      throw SafeTensorsError(file: path, kind: .tensorNotFound(tensor: name))
    }
    return t
  }

  /// The absolute byte range of `tensor`'s data in the file.
  public func fileRange(of tensor: TensorInfo) -> Range<Int> {
    (header.dataStart + tensor.begin)..<(header.dataStart + tensor.end)
  }

  /// Calls `body` with the raw bytes of `tensor`.
  ///
  /// - Warning: Do not escape the pointer from the closure. On a stored form
  ///   (``MappedFile/isStored``) the tensor must have been prepared
  ///   (``MappedFile/prepare(_:)``).
  public func withData<R, E: Error>(
    _ tensor: TensorInfo, _ body: (UnsafeRawBufferPointer) throws(E) -> R
  ) throws(E) -> R {
    // This is safe: the header was validated, so every tensor lies within the file.
    try mapping.withBytes(fileRange(of: tensor), body)
  }

  /// Copies the raw bytes of the tensor named `name`.
  public func bytes(of name: String) throws(SafeTensorsError) -> [UInt8] {
    let t = try info(name)
    return try mapping.withPreparedBytes(fileRange(of: t)) { Array($0) }
  }
}
