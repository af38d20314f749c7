import CZstd

/// Compresses data that arrives in pieces into zstd frames.
///
/// Feed input with ``compress(_:into:)`` as it becomes available, then call
/// ``finish(into:)`` to end the frame; compressed bytes are appended to the
/// array you pass. After `finish`, the compressor starts a new frame with the
/// same settings, so one instance can write many frames. Every frame carries a
/// 32-bit content checksum.
///
/// ```swift
/// let compressor = try ZstdCompressor(level: 3, workerCount: 2)
/// var frame: [UInt8] = []
/// for chunk in chunks { try chunk.withUnsafeBytes { try compressor.compress($0, into: &frame) } }
/// try compressor.finish(into: &frame)
/// ```
///
/// A compressor owns a `ZSTD_CCtx`, freed on deinit. It is not `Sendable`:
/// use one instance from one task at a time. After it throws, the frame in
/// progress is lost; discard the compressor.
public final class ZstdCompressor {
  private let context: CompressionContext
  /// Scratch output of `ZSTD_CStreamOutSize()` bytes, owned by `self`.
  private let scratch: UnsafeMutableRawBufferPointer
  private let pledgedSize: UInt64?

  /// The compression level this compressor was created with.
  public let level: Int32

  /// The number of worker threads libzstd compresses with; 0 compresses on
  /// the calling thread.
  public let workerCount: Int32

  /// Creates a streaming compressor.
  ///
  /// With `workerCount` of 1 or more, libzstd compresses on that many
  /// background threads and ``compress(_:into:)`` may return before the input
  /// is compressed (the bytes are copied). `pledgedSize`, when given, is
  /// written into the frame header as the content size, so that
  /// ``Zstd/decompress(_:expectedSize:)`` can check it up front; the frame
  /// then has to receive exactly that many bytes.
  ///
  /// The corresponding C functions are `ZSTD_createCCtx` and
  /// `ZSTD_CCtx_setParameter`.
  ///
  /// - Parameters:
  ///   - level: The compression level; see ``Zstd/levels``.
  ///   - workerCount: Worker threads (`ZSTD_c_nbWorkers`); 0 for none.
  ///   - pledgedSize: The exact number of bytes the first frame will hold,
  ///     or `nil` when unknown.
  /// - Throws: ``ZstdError``, for example ``ZstdError/Code/parameterUnsupported``
  ///   when `workerCount > 0` and libzstd was built without threads.
  public init(
    level: Int32 = Zstd.defaultLevel, workerCount: Int32 = 0, pledgedSize: UInt64? = nil
  ) throws(ZstdError) {
    let context = try CompressionContext()
    try context.set(ZSTD_c_compressionLevel, level)
    try context.set(ZSTD_c_checksumFlag, 1)
    try context.set(ZSTD_c_nbWorkers, workerCount)
    if let pledgedSize {
      try checkZstd(
        ZSTD_CCtx_setPledgedSrcSize(context.pointer, pledgedSize), "ZSTD_CCtx_setPledgedSrcSize")
    }
    self.context = context
    self.level = level
    self.workerCount = workerCount
    self.pledgedSize = pledgedSize
    self.scratch = .allocate(byteCount: ZSTD_CStreamOutSize(), alignment: 16)
  }

  deinit {
    scratch.deallocate()
  }

  /// Compresses `input`, appending whatever compressed bytes are ready.
  ///
  /// libzstd buffers input internally, so little or nothing may be appended
  /// until enough has been fed or ``finish(into:)`` is called. `input` is
  /// fully consumed on return.
  ///
  /// The corresponding C function is `ZSTD_compressStream2` with
  /// `ZSTD_e_continue`.
  ///
  /// - Parameters:
  ///   - input: The next bytes of the frame.
  ///   - output: The array compressed bytes are appended to.
  /// - Throws: ``ZstdError`` if libzstd fails, for example when more bytes
  ///   arrive than were pledged.
  public func compress(_ input: UnsafeRawBufferPointer, into output: inout [UInt8])
    throws(ZstdError)
  {
    try drive(input, ZSTD_e_continue, into: &output)
  }

  /// Ends the current frame, appending all remaining compressed bytes.
  ///
  /// The next ``compress(_:into:)`` call starts a new frame with the same
  /// level and worker count (and no pledged size).
  ///
  /// The corresponding C function is `ZSTD_compressStream2` with
  /// `ZSTD_e_end`.
  ///
  /// - Parameter output: The array compressed bytes are appended to.
  /// - Throws: ``ZstdError`` if libzstd fails, for example when fewer bytes
  ///   arrived than were pledged.
  public func finish(into output: inout [UInt8]) throws(ZstdError) {
    try drive(UnsafeRawBufferPointer(start: nil, count: 0), ZSTD_e_end, into: &output)
  }

  /// Runs `ZSTD_compressStream2` until `input` is consumed and, for
  /// `ZSTD_e_end`, the frame is fully flushed.
  private func drive(
    _ input: UnsafeRawBufferPointer, _ directive: ZSTD_EndDirective, into output: inout [UInt8]
  ) throws(ZstdError) {
    var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
    while true {
      var outBuffer = ZSTD_outBuffer(dst: scratch.baseAddress, size: scratch.count, pos: 0)
      let remaining = try checkZstd(
        ZSTD_compressStream2(context.pointer, &outBuffer, &inBuffer, directive),
        "ZSTD_compressStream2")
      output.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[..<outBuffer.pos]))
      let done =
        directive == ZSTD_e_end
        ? remaining == 0 : inBuffer.pos == inBuffer.size
      if done { return }
    }
  }
}

@available(*, unavailable, message: "a ZSTD_CCtx must not be used from two threads at once")
extension ZstdCompressor: Sendable {}
