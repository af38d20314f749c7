import CZstd

/// One-shot zstd compression and decompression of whole buffers.
///
/// For data that arrives in pieces, use ``ZstdCompressor`` and
/// ``ZstdDecompressor``. This is the only module that imports `CZstd`.
public enum Zstd {
  /// The compression level used when none is given, libzstd's default.
  public static let defaultLevel: Int32 = 3

  /// The range of compression levels this libzstd accepts.
  ///
  /// Negative levels trade ratio for speed; level 0 means the default level.
  ///
  /// The corresponding C functions are `ZSTD_minCLevel` and `ZSTD_maxCLevel`.
  public static var levels: ClosedRange<Int32> {
    Int32(ZSTD_minCLevel())...Int32(ZSTD_maxCLevel())
  }

  /// The version of the libzstd this process runs against, such as "1.5.4".
  ///
  /// The corresponding C function is `ZSTD_versionString`.
  public static var version: String {
    String(cString: ZSTD_versionString())
  }

  /// How ``compress(_:level:tuning:)`` searches for matches.
  public enum Tuning: Sendable, Equatable {
    /// The level's own parameters.
    case standard
    /// Almost no match search (minimum match 7, hash and chain tables of 64
    /// entries): the data is coded as Huffman literals. For byte planes of
    /// floats, where short spurious matches cost more than they save: on the
    /// exponent plane of Gaussian BF16 weights this reaches 2.61 bits per
    /// byte against an order-0 entropy of 2.54, where level 3 gets 3.25.
    case entropy
  }

  /// Compresses a buffer into a single zstd frame.
  ///
  /// The frame records the content size (so ``decompress(_:expectedSize:)``
  /// can check it before allocating) and a 32-bit checksum of the content
  /// (so corruption is detected on decompression).
  ///
  /// The corresponding C function is `ZSTD_compress2`.
  ///
  /// - Parameters:
  ///   - source: The bytes to compress; may be empty.
  ///   - level: The compression level, clamped by libzstd to ``levels``.
  /// - Returns: The compressed frame.
  /// - Throws: ``ZstdError`` if libzstd fails, for example when `source` is
  ///   too large for `ZSTD_compressBound`.
  public static func compress(
    _ source: UnsafeRawBufferPointer, level: Int32 = defaultLevel, tuning: Tuning = .standard
  ) throws(ZstdError) -> [UInt8] {
    let bound = try checkZstd(ZSTD_compressBound(source.count), "ZSTD_compressBound")
    let context = try CompressionContext()
    try context.set(ZSTD_c_compressionLevel, level)
    try context.set(ZSTD_c_checksumFlag, 1)
    if tuning == .entropy {
      try context.set(ZSTD_c_minMatch, 7)
      try context.set(ZSTD_c_hashLog, 6)
      try context.set(ZSTD_c_chainLog, 6)
    }

    var status = 0
    var compressed = [UInt8](unsafeUninitializedCapacity: bound) { buffer, initializedCount in
      status = ZSTD_compress2(
        context.pointer, buffer.baseAddress, buffer.count, source.baseAddress, source.count)
      // Only a successful result is a byte count; on failure nothing is kept.
      initializedCount = ZSTD_isError(status) != 0 ? 0 : status
    }
    try checkZstd(status, "ZSTD_compress2")
    // The bound is larger than the result; do not keep the slack alive.
    if compressed.capacity > compressed.count + compressed.count / 8 + 4096 {
      compressed = [UInt8](unsafeUninitializedCapacity: compressed.count) { buffer, count in
        count = buffer.initialize(fromContentsOf: compressed)
      }
    }
    return compressed
  }

  /// Decompresses zstd data that must decode to exactly `expectedSize` bytes.
  ///
  /// `source` may hold one frame or several concatenated frames (as written by
  /// ``ZstdCompressor`` across several ``ZstdCompressor/finish(into:)``
  /// calls, or by `zstd` on the command line). When the input is a single
  /// frame that records its content size, that size is compared with
  /// `expectedSize` before any memory is allocated. Otherwise at most
  /// `expectedSize` bytes are decoded: more output is an error, and so is
  /// less. Malformed, truncated or corrupt input always throws; it never traps.
  /// In the second case `expectedSize` bytes are allocated before decoding, so
  /// it should come from a trusted source (or be bounded by the caller).
  ///
  /// The corresponding C function is `ZSTD_decompress`.
  ///
  /// - Parameters:
  ///   - source: One or more complete zstd frames.
  ///   - expectedSize: The exact decompressed size in bytes. Traps if
  ///     negative.
  /// - Returns: The `expectedSize` decompressed bytes.
  /// - Throws: ``ZstdError`` with code ``ZstdError/Code/contentSizeMismatch``
  ///   when the content size differs from `expectedSize`
  ///   (``ZstdError/Code/dstSizeTooSmall`` when that is only found while
  ///   decoding), or libzstd's code for malformed, truncated or corrupt input.
  public static func decompress(
    _ source: UnsafeRawBufferPointer, expectedSize: Int
  ) throws(ZstdError) -> [UInt8] {
    precondition(expectedSize >= 0, "expectedSize must not be negative")
    // Validates the first frame completely (magic number, header, block
    // sizes); for empty or truncated input this is srcSize_wrong.
    let firstFrameSize = try checkZstd(
      ZSTD_findFrameCompressedSize(source.baseAddress, source.count),
      "ZSTD_findFrameCompressedSize")
    if firstFrameSize == source.count {
      let declared = ZSTD_getFrameContentSize(source.baseAddress, source.count)
      if declared != czstd_contentsize_unknown() && declared != czstd_contentsize_error()
        && declared != UInt64(expectedSize)
      {
        throw ZstdError(
          code: .contentSizeMismatch, operation: "ZSTD_getFrameContentSize",
          message: "frame declares \(declared) bytes, expected \(expectedSize)")
      }
    }

    var status = 0
    let decompressed = [UInt8](unsafeUninitializedCapacity: expectedSize) {
      buffer, initializedCount in
      // Capacity may exceed expectedSize; never let libzstd write past it.
      status = ZSTD_decompress(
        buffer.baseAddress, expectedSize, source.baseAddress, source.count)
      initializedCount = ZSTD_isError(status) != 0 ? 0 : status
    }
    try checkZstd(status, "ZSTD_decompress")
    guard decompressed.count == expectedSize else {
      throw ZstdError(
        code: .contentSizeMismatch, operation: "ZSTD_decompress",
        message: "data decompressed to \(decompressed.count) bytes, expected \(expectedSize)")
    }
    return decompressed
  }
}

/// An owned `ZSTD_CCtx`, freed on deinit.
final class CompressionContext {
  let pointer: OpaquePointer

  /// Creates a compression context.
  ///
  /// - Throws: ``ZstdError`` with ``ZstdError/Code/memoryAllocation`` if
  ///   `ZSTD_createCCtx` returns null.
  init() throws(ZstdError) {
    guard let pointer = ZSTD_createCCtx() else {
      throw ZstdError(
        code: .memoryAllocation, operation: "ZSTD_createCCtx",
        message: "could not allocate a compression context")
    }
    self.pointer = pointer
  }

  deinit {
    ZSTD_freeCCtx(pointer)
  }

  /// Sets one advanced compression parameter.
  ///
  /// - Parameters:
  ///   - parameter: The parameter, such as `ZSTD_c_checksumFlag`.
  ///   - value: Its value.
  /// - Throws: ``ZstdError`` if libzstd rejects the parameter or value.
  func set(_ parameter: ZSTD_cParameter, _ value: Int32) throws(ZstdError) {
    try checkZstd(ZSTD_CCtx_setParameter(pointer, parameter, value), "ZSTD_CCtx_setParameter")
  }
}

@available(*, unavailable, message: "a ZSTD_CCtx must not be used from two threads at once")
extension CompressionContext: Sendable {}
