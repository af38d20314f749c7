import StrictJSON

/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable, Hashable {
  /// The tensor's name.
  public let name: String
  /// The element type.
  public let dtype: DType
  /// The dimensions, outermost first; `[]` for a scalar.
  public let shape: [Int]
  /// Start of the data, relative to the data buffer (after the header).
  public let begin: Int
  /// End of the data (exclusive), relative to the data buffer.
  public let end: Int

  /// Creates an entry. The caller guarantees consistency (the parser checks it).
  public init(name: String, dtype: DType, shape: [Int], begin: Int, end: Int) {
    self.name = name
    self.dtype = dtype
    self.shape = shape
    self.begin = begin
    self.end = end
  }

  /// The data's length in bytes.
  public var byteCount: Int { end - begin }

  /// The number of elements (the product of ``shape``; 1 for a scalar).
  public var elementCount: Int { shape.reduce(1, *) }
}

/// A parsed and validated safetensors header.
///
/// Layout (FORMATS.md §1.1): bytes `0..<8` hold `N`, the header length as a
/// little-endian `UInt64`; bytes `8..<8+N` hold a UTF-8 JSON object; the data
/// buffer follows. Every rule of the reference reader (FORMATS.md §1.3) is
/// enforced, and duplicate tensor names are rejected.
public struct SafeTensorsHeader: Sendable {
  /// The reference reader's header size cap, `MAX_HEADER_SIZE`.
  public static let maxHeaderLength = 100_000_000

  /// `N`, the header's length in bytes (including any padding).
  public let headerLength: Int
  /// `__metadata__` in document order, or `nil` when absent.
  public let metadata: [(key: String, value: String)]?
  /// The tensors in data order (sorted by offsets).
  public let tensors: [TensorInfo]
  /// The tensor names in the order the header lists them.
  public let headerOrder: [String]
  private let byName: [String: Int]

  /// The absolute file offset at which the data buffer starts, `8 + N`.
  public var dataStart: Int { 8 + headerLength }
  /// The data buffer's length (the last tensor's end offset).
  public var dataLength: Int { tensors.last?.end ?? 0 }
  /// The file size the header describes.
  public var fileSize: Int { dataStart + dataLength }

  /// The tensor named `name`.
  public func tensor(named name: String) -> TensorInfo? {
    byName[name].map { tensors[$0] }
  }

  /// The value of the `__metadata__` key `key`.
  public func metadataValue(_ key: String) -> String? {
    metadata?.first(where: { $0.key == key })?.value
  }

  init(headerLength: Int, metadata: [(key: String, value: String)]?, tensors: [TensorInfo], headerOrder: [String]) {
    self.headerLength = headerLength
    self.metadata = metadata
    self.tensors = tensors
    self.headerOrder = headerOrder
    var byName: [String: Int] = [:]
    for (i, t) in tensors.enumerated() { byName[t.name] = i }
    self.byName = byName
  }

  /// Reads and validates the header of the file at `path` without mapping the data.
  ///
  /// - Throws: The first ``SafeTensorsError`` found.
  public static func read(from path: String) throws(SafeTensorsError) -> SafeTensorsHeader {
    let (header, problems) = try inspect(path)
    if let first = problems.first { throw first }
    return header!
  }

  /// Reads the header of the file at `path` and returns every problem found.
  ///
  /// Structural problems (length, UTF-8, JSON) end the inspection; per-tensor
  /// problems are all collected. The header is returned only when there are
  /// no problems.
  ///
  /// - Throws: Only when the file cannot be opened or read.
  public static func inspect(_ path: String) throws(SafeTensorsError) -> (SafeTensorsHeader?, [SafeTensorsError]) {
    if VirtualFiles.isStored(path) {
      // A stored form: its header is read through the source (the archive keeps it verbatim).
      let m = try MappedFile(path: path)
      let (header, kinds) = try validate(fileSize: m.count) { (range) throws(SafeTensorsError) in
        try m.withPreparedBytes(range) { Array($0) }
      }
      return (header, kinds.map { SafeTensorsError(file: path, kind: $0) })
    }
    let f = try SystemFile(readingAt: path)
    let (header, kinds) = try validate(fileSize: try f.size()) { (range) throws(SafeTensorsError) in
      try f.read(count: range.count, at: range.lowerBound)
    }
    return (header, kinds.map { SafeTensorsError(file: path, kind: $0) })
  }

  /// Reads the length prefix and the header through `read` (only ranges that
  /// lie within the file are asked for) and validates them.
  ///
  /// Shared by the `pread` path (``inspect(_:)``) and the mapped path
  /// (``SafeTensorsFile``).
  public static func validate<E: Error>(
    fileSize: Int, read: (Range<Int>) throws(E) -> [UInt8]
  ) throws(E) -> (SafeTensorsHeader?, [SafeTensorsError.Kind]) {
    let prefix = try read(0..<min(8, fileSize))
    var headerBytes: [UInt8] = []
    if prefix.count == 8 {
      let n = prefix.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
      if n <= UInt64(maxHeaderLength) && 8 + Int(n) <= fileSize {
        headerBytes = try read(8..<(8 + Int(n)))
      }
    }
    return validate(prefix: prefix, header: headerBytes, fileSize: fileSize)
  }

  /// Validates a header given its 8-byte prefix, the header bytes and the file size.
  ///
  /// - Parameters:
  ///   - prefix: The first `min(8, fileSize)` bytes of the file.
  ///   - header: Bytes `8..<8+N`; ignored when the prefix already fails.
  ///   - fileSize: The file's size in bytes.
  /// - Returns: The header (when valid) and every problem found.
  public static func validate(prefix: [UInt8], header: [UInt8], fileSize: Int) -> (SafeTensorsHeader?, [SafeTensorsError.Kind]) {
    guard prefix.count >= 8, fileSize >= 8 else { return (nil, [.headerTooSmall(fileSize: fileSize)]) }
    let n = prefix.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    if n > UInt64(maxHeaderLength) { return (nil, [.headerTooLarge(length: n, limit: maxHeaderLength)]) }
    // This is safe: n <= 100_000_000, so 8 + n cannot overflow.
    if 8 + Int(n) > fileSize { return (nil, [.headerLengthPastEOF(length: n, fileSize: fileSize)]) }
    precondition(header.count == Int(n), "caller must pass exactly N header bytes")
    return header.withUnsafeBytes { validateJSON($0, fileSize: fileSize) }
  }

  static func validateJSON(_ bytes: UnsafeRawBufferPointer, fileSize: Int) -> (SafeTensorsHeader?, [SafeTensorsError.Kind]) {
    let n = bytes.count
    let root: JSONValue
    do {
      root = try JSONParser.parse(bytes, duplicateKeys: .reject, maxDepth: 64)
    } catch {
      switch error.reason {
      case .invalidUTF8: return (nil, [.headerNotUTF8(offset: error.offset)])
      case .duplicateKey(let key, let path):
        if path.isEmpty { return (nil, [.duplicateTensor(tensor: key)]) }
        if path[0] == "__metadata__" { return (nil, [.invalidMetadata("repeats the key \(quoted(key))")]) }
        return (nil, [.invalidTensorEntry(tensor: path[0], reason: "repeats the field \(quoted(key))")])
      default: return (nil, [.headerNotJSON(error.description)])
      }
    }
    guard let object = root.objectValue else { return (nil, [.headerNotObject(found: root.kindName)]) }

    var problems: [SafeTensorsError.Kind] = []
    var metadata: [(key: String, value: String)]? = nil
    var entries: [(name: String, dtype: DType, shape: [UInt64], begin: UInt64, end: UInt64)] = []
    entries.reserveCapacity(object.count)
    for (name, value) in object.members {
      if name == "__metadata__" {
        if value.isNull { continue }
        guard let m = value.objectValue else {
          problems.append(.invalidMetadata("is a JSON \(value.kindName), expected a map of strings"))
          continue
        }
        var pairs: [(key: String, value: String)] = []
        for (k, v) in m.members {
          guard let s = v.stringValue else {
            problems.append(.invalidMetadata("value for \(quoted(k)) is a JSON \(v.kindName), expected a string"))
            continue
          }
          pairs.append((k, s))
        }
        metadata = pairs
        continue
      }
      guard let entry = value.objectValue else {
        problems.append(.invalidTensorEntry(tensor: name, reason: "entry is a JSON \(value.kindName), expected an object"))
        continue
      }
      guard let dtypeValue = entry["dtype"] else {
        problems.append(.invalidTensorEntry(tensor: name, reason: "missing field \"dtype\""))
        continue
      }
      guard let dtypeString = dtypeValue.stringValue else {
        problems.append(.invalidTensorEntry(tensor: name, reason: "\"dtype\" is a JSON \(dtypeValue.kindName), expected a string"))
        continue
      }
      guard let dtype = DType(rawValue: dtypeString) else {
        problems.append(.unknownDType(tensor: name, dtype: dtypeString))
        continue
      }
      guard let shapeValue = entry["shape"] else {
        problems.append(.invalidTensorEntry(tensor: name, reason: "missing field \"shape\""))
        continue
      }
      guard let shape = unsignedArray(shapeValue) else {
        problems.append(.invalidTensorEntry(tensor: name, reason: "\"shape\" must be an array of non-negative integers, found \(JSONWriter.string(shapeValue))"))
        continue
      }
      guard let offsetsValue = entry["data_offsets"] else {
        problems.append(.invalidTensorEntry(tensor: name, reason: "missing field \"data_offsets\""))
        continue
      }
      guard let offsets = unsignedArray(offsetsValue), offsets.count == 2 else {
        problems.append(.invalidTensorEntry(tensor: name, reason: "\"data_offsets\" must be two non-negative integers, found \(JSONWriter.string(offsetsValue))"))
        continue
      }
      entries.append((name, dtype, shape, offsets[0], offsets[1]))
    }
    if !problems.isEmpty { return (nil, problems) }

    // Same order as the reference: sort by (begin, end), stable.
    let headerOrder = entries.map(\.name)
    let sorted = entries.enumerated().sorted {
      ($0.element.begin, $0.element.end, $0.offset) < ($1.element.begin, $1.element.end, $1.offset)
    }.map(\.element)

    var tensors: [TensorInfo] = []
    tensors.reserveCapacity(sorted.count)
    var start: UInt64 = 0
    for e in sorted {
      if e.begin != start || e.end < e.begin {
        problems.append(.invalidOffsets(tensor: e.name, begin: e.begin, end: e.end, expectedBegin: start))
        start = max(e.end, e.begin)
        continue
      }
      start = e.end
      var elements: UInt64 = 1
      var overflow = false
      for d in e.shape {
        let (p, o) = elements.multipliedReportingOverflow(by: d)
        elements = p
        overflow = overflow || o
      }
      let (bits, o2) = elements.multipliedReportingOverflow(by: UInt64(e.dtype.bitSize))
      if overflow || o2 || e.shape.contains(where: { $0 > UInt64(Int.max) }) {
        problems.append(.overflow(tensor: e.name, shape: e.shape, dtype: e.dtype))
        continue
      }
      if bits % 8 != 0 {
        problems.append(.misalignedSlice(tensor: e.name, elements: elements, dtype: e.dtype))
        continue
      }
      let shape = e.shape.map { Int($0) }
      if e.end - e.begin != bits / 8 {
        problems.append(.sizeMismatch(tensor: e.name, shape: shape, dtype: e.dtype, expectedBytes: bits / 8, actualBytes: e.end - e.begin))
        continue
      }
      if e.end > UInt64(Int.max / 2) {
        problems.append(.overflow(tensor: e.name, shape: e.shape, dtype: e.dtype))
        continue
      }
      tensors.append(TensorInfo(name: e.name, dtype: e.dtype, shape: shape, begin: Int(e.begin), end: Int(e.end)))
    }
    if !problems.isEmpty { return (nil, problems) }

    let dataStart = UInt64(8 + n)
    let expected = dataStart + (tensors.last.map { UInt64($0.end) } ?? 0)
    if expected != UInt64(fileSize) {
      let cut = tensors.first(where: { dataStart + UInt64($0.end) > UInt64(fileSize) })?.name
      return (nil, [.incompleteBuffer(expectedFileSize: expected, fileSize: fileSize, tensor: cut)])
    }
    return (SafeTensorsHeader(headerLength: n, metadata: metadata, tensors: tensors, headerOrder: headerOrder), [])
  }

  private static func unsignedArray(_ value: JSONValue) -> [UInt64]? {
    guard let a = value.arrayValue else { return nil }
    var out: [UInt64] = []
    out.reserveCapacity(a.count)
    for v in a {
      guard let u = v.numberValue?.uint64 else { return nil }
      out.append(u)
    }
    return out
  }
}
