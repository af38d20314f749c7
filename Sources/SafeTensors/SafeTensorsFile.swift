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
/// - Warning: If another process truncates the file while it is mapped,
///   touching the lost pages raises `SIGBUS`. Inputs are never written by
///   CheckpointKit; do not modify them while it runs.
public final class MappedFile: @unchecked Sendable {
  // @unchecked: the mapping is read-only and immutable after init.
  /// The path that was mapped.
  public let path: String
  /// The mapped bytes.
  private let base: UnsafeRawPointer?
  /// The file's size in bytes.
  public let count: Int

  /// Maps the file at `path` read-only.
  ///
  /// The corresponding C function is `mmap`.
  public init(path: String) throws(SafeTensorsError) {
    let f = try SystemFile(readingAt: path)
    let size = try f.size()
    self.path = path
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

  /// Calls `body` with the bytes in `range`.
  ///
  /// - Precondition: `range` lies within the file.
  /// - Warning: Do not escape the pointer from the closure.
  public func withBytes<R, E: Error>(
    _ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws(E) -> R
  ) throws(E) -> R {
    precondition(range.lowerBound >= 0 && range.upperBound <= count, "range outside the mapping")
    guard let base else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
    return try body(UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count))
  }

  /// Tells the kernel the mapping will be read sequentially (`madvise`).
  public func adviseSequential() {
    guard let base else { return }
    _ = madvise(UnsafeMutableRawPointer(mutating: base), count, MADV_SEQUENTIAL)
  }

  /// Drops the resident pages wholly inside `range` from this process
  /// (`madvise(MADV_DONTNEED)`); they are read again if touched later.
  public func release(_ range: Range<Int>) {
    guard let base else { return }
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
    let (header, problems) = SafeTensorsHeader.validate(fileSize: mapping.count) { range in
      mapping.withBytes(range) { Array($0) }
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
  /// - Warning: Do not escape the pointer from the closure.
  public func withData<R, E: Error>(
    _ tensor: TensorInfo, _ body: (UnsafeRawBufferPointer) throws(E) -> R
  ) throws(E) -> R {
    // This is safe: the header was validated, so every tensor lies within the file.
    try mapping.withBytes(fileRange(of: tensor), body)
  }

  /// Copies the raw bytes of the tensor named `name`.
  public func bytes(of name: String) throws(SafeTensorsError) -> [UInt8] {
    let t = try info(name)
    return withData(t) { Array($0) }
  }
}
