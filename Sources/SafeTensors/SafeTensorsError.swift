import StrictJSON

/// A problem with a safetensors file, naming the file and, where there is one,
/// the tensor.
///
/// Each way a file can be wrong is its own ``Kind`` (one case per rule of the
/// reference reader, plus rejected duplicate names), with the numbers involved.
/// ``code`` is a stable kebab-case identifier that scripts and tests can match.
public struct SafeTensorsError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The ways a safetensors file can be wrong.
  public enum Kind: Sendable, Equatable {
    /// The file is shorter than the 8-byte length prefix.
    case headerTooSmall(fileSize: Int)
    /// The header length exceeds the reference reader's 100,000,000-byte cap.
    case headerTooLarge(length: UInt64, limit: Int)
    /// `8 + N` runs past the end of the file.
    case headerLengthPastEOF(length: UInt64, fileSize: Int)
    /// The header is not valid UTF-8.
    case headerNotUTF8(offset: Int)
    /// The header is not valid JSON.
    case headerNotJSON(String)
    /// The header's top-level value is not an object.
    case headerNotObject(found: String)
    /// `__metadata__` is not a map of strings to strings.
    case invalidMetadata(String)
    /// A tensor entry lacks a field or has one of the wrong type.
    case invalidTensorEntry(tensor: String, reason: String)
    /// A tensor's dtype string is not a known safetensors dtype.
    case unknownDType(tensor: String, dtype: String)
    /// The same tensor name appears twice in the header.
    case duplicateTensor(tensor: String)
    /// After sorting by offsets, the tensor does not start where the previous
    /// one ended (a gap or overlap), or ends before it begins.
    case invalidOffsets(tensor: String, begin: UInt64, end: UInt64, expectedBegin: UInt64)
    /// The element count or bit count overflows.
    case overflow(tensor: String, shape: [UInt64], dtype: DType)
    /// A sub-byte dtype whose element count does not fill whole bytes.
    case misalignedSlice(tensor: String, elements: UInt64, dtype: DType)
    /// The byte range's length does not match shape × dtype size.
    case sizeMismatch(tensor: String, shape: [Int], dtype: DType, expectedBytes: UInt64, actualBytes: UInt64)
    /// The data buffer does not end exactly at the end of the file.
    case incompleteBuffer(expectedFileSize: UInt64, fileSize: Int, tensor: String?)
    /// A tensor was asked for by a name the file lacks.
    case tensorNotFound(tensor: String)
    /// A system call failed.
    case io(operation: String, errno: Int32)
    /// A writer was used out of its plan (wrong order, too many or too few bytes).
    case writerMisuse(String)
    /// A stored form of the file (e.g. a `.safetensors.zst` archive) cannot
    /// be read: `code` is the reader's own (`corrupt-archive`, `checksum-mismatch`, …).
    case storage(code: String, tensor: String?, message: String)
  }

  /// The file's path as given by the caller.
  public let file: String
  /// What is wrong.
  public let kind: Kind

  /// Creates an error for `file`.
  public init(file: String, kind: Kind) {
    self.file = file
    self.kind = kind
  }

  /// The tensor the problem concerns, if any.
  public var tensor: String? {
    switch kind {
    case .invalidTensorEntry(let t, _), .unknownDType(let t, _), .duplicateTensor(let t),
      .invalidOffsets(let t, _, _, _), .overflow(let t, _, _), .misalignedSlice(let t, _, _),
      .sizeMismatch(let t, _, _, _, _), .tensorNotFound(let t):
      t
    case .incompleteBuffer(_, _, let t): t
    case .storage(_, let t, _): t
    default: nil
    }
  }

  /// A stable identifier for the kind of problem, e.g. `size-mismatch`.
  public var code: String {
    switch kind {
    case .headerTooSmall: "header-too-small"
    case .headerTooLarge: "header-too-large"
    case .headerLengthPastEOF: "header-length-past-eof"
    case .headerNotUTF8: "header-not-utf8"
    case .headerNotJSON: "header-not-json"
    case .headerNotObject: "header-not-object"
    case .invalidMetadata: "invalid-metadata"
    case .invalidTensorEntry: "invalid-tensor-entry"
    case .unknownDType: "unknown-dtype"
    case .duplicateTensor: "duplicate-tensor"
    case .invalidOffsets: "invalid-offsets"
    case .overflow: "overflow"
    case .misalignedSlice: "misaligned-slice"
    case .sizeMismatch: "size-mismatch"
    case .incompleteBuffer: "incomplete-buffer"
    case .tensorNotFound: "tensor-not-found"
    case .io: "io-error"
    case .writerMisuse: "writer-misuse"
    case .storage(let code, _, _): code
    }
  }

  /// What is wrong, without the file name.
  public var message: String {
    switch kind {
    case .headerTooSmall(let size):
      return "file is \(size) bytes, shorter than the 8-byte header length"
    case .headerTooLarge(let length, let limit):
      return "header length \(length) exceeds the limit of \(limit) bytes"
    case .headerLengthPastEOF(let length, let size):
      return "header length \(length) runs past the end of the \(size)-byte file (truncated?)"
    case .headerNotUTF8(let offset):
      return "header is not valid UTF-8 (byte \(offset) of the header)"
    case .headerNotJSON(let what):
      return "header is not valid JSON: \(what)"
    case .headerNotObject(let found):
      return "header is a JSON \(found), expected an object"
    case .invalidMetadata(let why):
      return "__metadata__ \(why)"
    case .invalidTensorEntry(let t, let why):
      return "tensor \(quoted(t)): \(why)"
    case .unknownDType(let t, let dtype):
      return "tensor \(quoted(t)): unknown dtype \(quoted(dtype))"
    case .duplicateTensor(let t):
      return "tensor \(quoted(t)) appears more than once in the header"
    case .invalidOffsets(let t, let begin, let end, let expected):
      if end < begin {
        return "tensor \(quoted(t)): data_offsets [\(begin), \(end)] end before they begin"
      }
      let what = begin > expected ? "leaves a gap of \(begin - expected) bytes" : "overlaps the previous tensor by \(expected - begin) bytes"
      return "tensor \(quoted(t)): data_offsets [\(begin), \(end)] should begin at \(expected); \(what)"
    case .overflow(let t, let shape, let dtype):
      return "tensor \(quoted(t)): shape \(shape) of \(dtype) overflows 64-bit size arithmetic"
    case .misalignedSlice(let t, let n, let dtype):
      return "tensor \(quoted(t)): \(n) elements of \(dtype) do not fill whole bytes"
    case .sizeMismatch(let t, let shape, let dtype, let expected, let actual):
      return "tensor \(quoted(t)): data is \(actual) bytes but shape \(shape) of \(dtype) needs \(expected)"
    case .incompleteBuffer(let expected, let size, let t):
      if UInt64(size) < expected {
        let cut = t.map { "; tensor \(quoted($0)) is cut off" } ?? ""
        return "file is \(size) bytes but the header describes \(expected) (truncated by \(expected - UInt64(size)) bytes\(cut))"
      }
      return "file is \(size) bytes but the header describes \(expected) (\(UInt64(size) - expected) trailing bytes)"
    case .tensorNotFound(let t):
      return "no tensor named \(quoted(t))"
    case .io(let op, let errno):
      return "\(op) failed: \(systemErrorDescription(errno)) (errno \(errno))"
    case .writerMisuse(let why):
      return why
    case .storage(_, let t, let message):
      return (t.map { "tensor \(quoted($0)): " } ?? "") + message
    }
  }

  public var description: String { "\(file): \(message) [\(code)]" }
}

/// Quotes a name for a message, escaping as JSON does.
func quoted(_ s: String) -> String {
  var out: [UInt8] = []
  JSONWriter.appendString(s, into: &out)
  return String(decoding: out, as: UTF8.self)
}
