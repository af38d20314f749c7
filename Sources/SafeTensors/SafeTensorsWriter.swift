import StrictJSON

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A tensor a writer will write: its name, dtype and shape.
public struct PlannedTensor: Sendable, Hashable {
  /// The tensor's name.
  public let name: String
  /// The element type.
  public let dtype: DType
  /// The dimensions.
  public let shape: [Int]

  /// Creates a plan entry.
  public init(name: String, dtype: DType, shape: [Int]) {
    self.name = name
    self.dtype = dtype
    self.shape = shape
  }

  /// The data's size in bytes, or `nil` on overflow or a sub-byte remainder.
  public var byteCount: Int? {
    var elements = 1
    for d in shape {
      guard d >= 0 else { return nil }
      let (p, o) = elements.multipliedReportingOverflow(by: d)
      if o { return nil }
      elements = p
    }
    let (bits, o) = elements.multipliedReportingOverflow(by: dtype.bitSize)
    if o || bits % 8 != 0 { return nil }
    return bits / 8
  }
}

/// How a writer orders tensors in the file.
public enum TensorOrder: Sendable {
  /// The reference writer's order: descending dtype alignment, then name (bytewise).
  case reference
  /// The order given, e.g. the data order of a file being copied.
  case asGiven
}

/// Writes a safetensors file by streaming payloads in planned order.
///
/// The header is computed from the plan first (compact JSON as serde_json
/// writes it, `__metadata__` first, padded with spaces to a multiple of 8), so
/// the writer never holds a tensor, let alone the shard, in memory. Data goes
/// to a temporary name in the destination's directory; ``finish()`` checks
/// that every planned byte was written, syncs, and renames into place. A writer
/// dropped without ``finish()`` removes its temporary file.
public final class SafeTensorsWriter {
  /// Where a writer's bytes go: a file at a temporary path, written in order.
  ///
  /// The default sink buffers and `write(2)`s; others may hash, pipeline or
  /// bypass the page cache. The writer checks the plan, names the temporary
  /// file, and renames it after ``ByteSink/finish()``.
  public protocol ByteSink: AnyObject {
    /// Appends bytes at the end of the file.
    func append(_ bytes: UnsafeRawBufferPointer) throws(SafeTensorsError)
    /// Writes everything still held, syncs and closes the file.
    func finish() throws(SafeTensorsError)
  }

  /// Makes the sink for a temporary path (the file does not exist yet).
  public typealias SinkFactory = (String) throws(SafeTensorsError) -> any ByteSink

  /// The destination path.
  public let path: String
  /// The tensors in file order.
  public let tensors: [PlannedTensor]
  /// The header bytes (without the 8-byte length prefix).
  public let header: [UInt8]

  private let temporaryPath: String
  private var sink: (any ByteSink)?
  private var sizes: [Int]
  private var current = 0
  private var remainingInCurrent: Int

  /// The metadata every writer emits unless told otherwise: `{"format":"pt"}`.
  ///
  /// transformers rejects shards whose `format` is missing or unknown.
  public static let defaultMetadata: [(key: String, value: String)] = [("format", "pt")]

  /// Plans a file and opens its temporary output.
  ///
  /// - Parameters:
  ///   - path: Where the finished file goes.
  ///   - tensors: The tensors to write.
  ///   - metadata: `__metadata__` entries, in order; `nil` writes none.
  ///   - order: ``TensorOrder/reference`` sorts as the reference writer does.
  ///   - sink: Makes the output for the temporary path; `nil` for buffered `write(2)`.
  /// - Throws: ``SafeTensorsError`` for an impossible plan (duplicate names,
  ///   overflowing shapes) or when the temporary file cannot be created.
  public init(
    path: String, tensors: [PlannedTensor],
    metadata: [(key: String, value: String)]? = SafeTensorsWriter.defaultMetadata,
    order: TensorOrder = .reference, sink: SinkFactory? = nil
  ) throws(SafeTensorsError) {
    let ordered: [PlannedTensor]
    switch order {
    case .asGiven: ordered = tensors
    case .reference: ordered = Self.referenceOrdered(tensors)
    }
    var seen = Set<String>()
    var sizes: [Int] = []
    for t in ordered {
      guard seen.insert(t.name).inserted else {
        throw SafeTensorsError(file: path, kind: .duplicateTensor(tensor: t.name))
      }
      guard let n = t.byteCount else {
        throw SafeTensorsError(file: path, kind: .overflow(tensor: t.name, shape: t.shape.map { UInt64(max($0, 0)) }, dtype: t.dtype))
      }
      sizes.append(n)
    }
    self.path = path
    self.tensors = ordered
    self.sizes = sizes
    self.header = Self.headerBytes(tensors: ordered, sizes: sizes, metadata: metadata)
    self.remainingInCurrent = sizes.first ?? 0
    self.temporaryPath = FileSystem.temporaryPath(for: path)
    let out: any ByteSink
    if let sink { out = try sink(temporaryPath) } else { out = try BufferedSink(path: temporaryPath) }
    var prefix = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) }
    prefix.append(contentsOf: header)
    do throws(SafeTensorsError) {
      try withBytes(of: prefix) { (b) throws(SafeTensorsError) in try out.append(b) }
    } catch {
      unlink(temporaryPath)
      throw error
    }
    self.sink = out
    skipEmptyTensors()
  }

  deinit {
    if sink != nil {
      sink = nil
      unlink(temporaryPath)
    }
  }

  /// `tensors` in the reference writer's order: descending dtype alignment, then name (bytewise).
  public static func referenceOrdered(_ tensors: [PlannedTensor]) -> [PlannedTensor] {
    tensors.sorted {
      if $0.dtype != $1.dtype { return $0.dtype.referenceOrder > $1.dtype.referenceOrder }
      return $0.name.utf8.lexicographicallyPrecedes($1.name.utf8)
    }
  }

  /// The serialized header for `tensors` in the given order, padded to a
  /// multiple of 8 with spaces, as the reference writer's `prepare()` does.
  public static func headerBytes(
    tensors: [PlannedTensor], sizes: [Int], metadata: [(key: String, value: String)]?
  ) -> [UInt8] {
    var out: [UInt8] = [UInt8(ascii: "{")]
    var first = true
    if let metadata {
      out.append(contentsOf: "\"__metadata__\":{".utf8)
      for (k, (key, value)) in metadata.enumerated() {
        if k > 0 { out.append(UInt8(ascii: ",")) }
        JSONWriter.appendString(key, into: &out)
        out.append(UInt8(ascii: ":"))
        JSONWriter.appendString(value, into: &out)
      }
      out.append(UInt8(ascii: "}"))
      first = false
    }
    var offset = 0
    for (t, size) in zip(tensors, sizes) {
      if !first { out.append(UInt8(ascii: ",")) }
      first = false
      JSONWriter.appendString(t.name, into: &out)
      out.append(contentsOf: "\":{\"dtype\":\"".utf8.dropFirst())
      out.append(contentsOf: "\(t.dtype.rawValue)\",\"shape\":[".utf8)
      out.append(contentsOf: t.shape.map(String.init).joined(separator: ",").utf8)
      out.append(contentsOf: "],\"data_offsets\":[\(offset),\(offset + size)]}".utf8)
      offset += size
    }
    out.append(UInt8(ascii: "}"))
    while out.count % 8 != 0 { out.append(UInt8(ascii: " ")) }
    return out
  }

  /// The tensor the next bytes belong to, or `nil` when all are written.
  public var nextTensor: PlannedTensor? { current < tensors.count ? tensors[current] : nil }

  /// The total size of the finished file.
  public var fileSize: Int { 8 + header.count + sizes.reduce(0, +) }

  /// Appends bytes of the current tensor; a call may cover part of a tensor,
  /// and consecutive calls continue where the last stopped.
  ///
  /// - Parameter name: When given, must name the tensor being written (a check
  ///   against writing out of plan).
  /// - Throws: ``SafeTensorsError`` on misuse (more bytes than planned, wrong
  ///   tensor) or an I/O failure.
  public func write(_ bytes: UnsafeRawBufferPointer, for name: String? = nil) throws(SafeTensorsError) {
    guard sink != nil else { throw misuse("write after finish") }
    if bytes.isEmpty, let name, let k = tensors.firstIndex(where: { $0.name == name }), sizes[k] == 0 {
      return  // an empty tensor: nothing to write
    }
    if let name, nextTensor?.name != name {
      throw misuse("wrote tensor \(quoted(name)) but the plan expects \(nextTensor.map { quoted($0.name) } ?? "no more tensors")")
    }
    var rest = bytes
    while !rest.isEmpty {
      guard current < tensors.count else { throw misuse("more bytes than the plan holds") }
      let take = min(rest.count, remainingInCurrent)
      try append(UnsafeRawBufferPointer(rebasing: rest[..<take]))
      rest = UnsafeRawBufferPointer(rebasing: rest[take...])
      remainingInCurrent -= take
      if remainingInCurrent == 0 {
        current += 1
        remainingInCurrent = current < sizes.count ? sizes[current] : 0
        skipEmptyTensors()
      }
      if take == 0 && !rest.isEmpty { throw misuse("more bytes than the plan holds") }
    }
  }

  /// Appends a whole tensor from an array.
  public func write(_ bytes: [UInt8], for name: String? = nil) throws(SafeTensorsError) {
    try withBytes(of: bytes) { (b) throws(SafeTensorsError) in try write(b, for: name) }
  }

  /// Checks that every planned byte was written, syncs, and renames the
  /// temporary file to ``path``.
  public func finish() throws(SafeTensorsError) {
    guard current == tensors.count else {
      throw misuse("finished with \(tensors.count - current) tensors unwritten, next \(quoted(tensors[current].name))")
    }
    guard let out = sink.take() else { throw misuse("finish called twice") }
    do throws(SafeTensorsError) {
      try out.finish()
      try FileSystem.commit(temporaryPath, to: path)
    } catch {
      unlink(temporaryPath)
      throw error
    }
  }

  private func skipEmptyTensors() {
    while current < sizes.count && sizes[current] == 0 {
      current += 1
      remainingInCurrent = current < sizes.count ? sizes[current] : 0
    }
  }

  private func append(_ bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
    try sink!.append(bytes)
  }

  /// The default sink: a 4 MiB buffer in front of `write(2)`, `fsync` at the end.
  final class BufferedSink: ByteSink {
    private var file: SystemFile?
    private var buffer: [UInt8] = []
    private static let capacity = 1 << 22

    init(path: String) throws(SafeTensorsError) { file = try SystemFile(creatingAt: path) }

    func append(_ bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
      if buffer.count + bytes.count > Self.capacity { try flush() }
      if bytes.count >= Self.capacity {
        try file!.write(bytes)
      } else {
        buffer.append(contentsOf: bytes)
      }
    }

    private func flush() throws(SafeTensorsError) {
      guard !buffer.isEmpty else { return }
      try withBytes(of: buffer) { (b) throws(SafeTensorsError) in try file!.write(b) }
      buffer.removeAll(keepingCapacity: true)
    }

    func finish() throws(SafeTensorsError) {
      try flush()
      guard let f = file.take() else { return }
      try f.sync()
    }
  }

  private func misuse(_ why: String) -> SafeTensorsError {
    SafeTensorsError(file: path, kind: .writerMisuse(why))
  }
}
