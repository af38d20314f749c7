import SafeTensors

/// One problem found in a checkpoint: what is wrong, where, and how bad.
///
/// Every check in CheckpointKit reports through this type, so `ckpt validate`
/// can list all problems at once, each naming the file and tensor.
public struct Problem: Sendable, Hashable, CustomStringConvertible {
  /// How serious a problem is.
  public enum Severity: String, Sendable, Hashable, Comparable {
    /// The checkpoint is not usable as is (exit status 1).
    case error
    /// Worth knowing, but the checkpoint is usable.
    case warning

    public static func < (a: Severity, b: Severity) -> Bool { a == .error && b == .warning }
  }

  /// A stable kebab-case identifier, e.g. `index-wrong-shard`.
  public let code: String
  /// The file, relative to the checkpoint's root, or `nil`.
  public let file: String?
  /// The tensor concerned, or `nil`.
  public let tensor: String?
  /// What is wrong, in words, with the numbers involved.
  public let message: String
  /// Error or warning.
  public let severity: Severity

  /// Creates a problem.
  public init(_ code: String, file: String?, tensor: String? = nil, _ message: String, severity: Severity = .error) {
    self.code = code
    self.file = file
    self.tensor = tensor
    self.message = message
    self.severity = severity
  }

  /// A problem from a safetensors error, with the file shown as `file`.
  public init(_ error: SafeTensorsError, file: String) {
    self.init(error.code, file: file, tensor: error.tensor, error.message)
  }

  /// `severity: file: tensor "name": message [code]`; the tensor is named
  /// unless the message already quotes it.
  public var description: String {
    var what = message
    if let tensor, !message.contains("\"\(tensor)\"") { what = "tensor \"\(tensor)\": " + message }
    return "\(severity.rawValue): \(file ?? "<checkpoint>"): \(what) [\(code)]"
  }
}

/// A failure that stops an operation, carrying every problem that caused it.
public struct CheckpointError: Error, Sendable, CustomStringConvertible {
  /// The problems, errors first.
  public let problems: [Problem]

  /// Creates an error from problems.
  public init(_ problems: [Problem]) { self.problems = problems }

  /// Creates an error from one problem.
  public init(_ code: String, file: String?, tensor: String? = nil, _ message: String) {
    self.problems = [Problem(code, file: file, tensor: tensor, message)]
  }

  public var description: String { problems.map(\.description).joined(separator: "\n") }
}
