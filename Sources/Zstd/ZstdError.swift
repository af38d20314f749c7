import CZstd

/// An error reported by libzstd, or by a size check this module makes.
///
/// Every libzstd return value goes through one checker, which turns a
/// result for which `ZSTD_isError` is true into a ``ZstdError`` carrying the
/// library's error code and the text of `ZSTD_getErrorName`. The checks this
/// module adds on top of libzstd (a frame that decodes to the wrong number of
/// bytes, input that ends inside a frame) use codes of their own, which are
/// negative so that they never collide with a libzstd code.
public struct ZstdError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The error's code.
  ///
  /// Non-negative values are libzstd's `ZSTD_ErrorCode` values, as returned by
  /// `ZSTD_getErrorCode` (values below 100 are stable across libzstd
  /// versions). Negative values are the checks this module makes itself.
  public struct Code: RawRepresentable, Hashable, Sendable {
    /// The code's numeric value.
    ///
    /// A `ZSTD_ErrorCode` value when non-negative; a check made by this
    /// module when negative.
    public var rawValue: Int

    /// Creates a code from its numeric value.
    ///
    /// - Parameter rawValue: A `ZSTD_ErrorCode` value, or one of this
    ///   module's negative codes.
    public init(rawValue: Int) {
      self.rawValue = rawValue
    }

    init(_ code: ZSTD_ErrorCode) {
      self.rawValue = Int(code.rawValue)
    }

    /// The input does not start with a zstd frame (`ZSTD_error_prefix_unknown`).
    public static let prefixUnknown = Code(ZSTD_error_prefix_unknown)
    /// The frame uses a parameter this libzstd cannot decode
    /// (`ZSTD_error_frameParameter_unsupported`).
    public static let frameParameterUnsupported = Code(ZSTD_error_frameParameter_unsupported)
    /// The frame's window is larger than the decoder allows
    /// (`ZSTD_error_frameParameter_windowTooLarge`).
    public static let frameParameterWindowTooLarge = Code(ZSTD_error_frameParameter_windowTooLarge)
    /// The compressed data is corrupt (`ZSTD_error_corruption_detected`).
    public static let corruptionDetected = Code(ZSTD_error_corruption_detected)
    /// The frame's checksum does not match its content (`ZSTD_error_checksum_wrong`).
    public static let checksumWrong = Code(ZSTD_error_checksum_wrong)
    /// A compression parameter is not supported by this libzstd, for example
    /// worker threads in a single-threaded build (`ZSTD_error_parameter_unsupported`).
    public static let parameterUnsupported = Code(ZSTD_error_parameter_unsupported)
    /// A compression parameter is out of range (`ZSTD_error_parameter_outOfBound`).
    public static let parameterOutOfBound = Code(ZSTD_error_parameter_outOfBound)
    /// libzstd could not allocate memory (`ZSTD_error_memory_allocation`).
    public static let memoryAllocation = Code(ZSTD_error_memory_allocation)
    /// The output would not fit the destination (`ZSTD_error_dstSize_tooSmall`).
    public static let dstSizeTooSmall = Code(ZSTD_error_dstSize_tooSmall)
    /// The input has the wrong size, for example a truncated frame
    /// (`ZSTD_error_srcSize_wrong`).
    public static let srcSizeWrong = Code(ZSTD_error_srcSize_wrong)

    /// The data decompressed to a size other than the expected one.
    ///
    /// Not a libzstd code: ``Zstd/decompress(_:expectedSize:)`` raises it.
    public static let contentSizeMismatch = Code(rawValue: -1)
    /// The input ended inside a frame.
    ///
    /// Not a libzstd code: ``ZstdDecompressor/finish()`` raises it.
    public static let truncatedInput = Code(rawValue: -2)
  }

  /// What went wrong, as a code to compare against.
  public var code: Code

  /// The C function (or check) that failed, such as `ZSTD_decompress`.
  public var operation: String

  /// A short explanation of the failure.
  ///
  /// For a libzstd error this is the text of `ZSTD_getErrorName`, for example
  /// "Data corruption detected".
  public var message: String

  /// Creates an error.
  ///
  /// - Parameters:
  ///   - code: What went wrong.
  ///   - operation: The C function (or check) that failed.
  ///   - message: The explanation.
  public init(code: Code, operation: String, message: String) {
    self.code = code
    self.operation = operation
    self.message = message
  }

  /// The error as one line: `zstd: <operation>: <message>`.
  public var description: String {
    "zstd: \(operation): \(message)"
  }
}

/// Returns `result` unless it is a libzstd error code, which it throws.
///
/// The single checker over `ZSTD_isError`, `ZSTD_getErrorCode` and
/// `ZSTD_getErrorName` used for every libzstd call in this module.
///
/// - Parameters:
///   - result: The `size_t` a libzstd function returned.
///   - operation: The name of that C function.
/// - Returns: `result`, which is not an error code.
/// - Throws: ``ZstdError`` when `ZSTD_isError(result)` is true.
@discardableResult
func checkZstd(_ result: Int, _ operation: String) throws(ZstdError) -> Int {
  if ZSTD_isError(result) != 0 {
    throw ZstdError(
      code: ZstdError.Code(ZSTD_getErrorCode(result)),
      operation: operation,
      message: String(cString: ZSTD_getErrorName(result)))
  }
  return result
}
