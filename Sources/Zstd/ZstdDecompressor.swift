import CZstd

/// Decompresses zstd data that arrives in pieces.
///
/// Feed compressed bytes with ``decompress(_:into:)`` in chunks of any size;
/// decompressed bytes are appended to the array you pass. Concatenated frames
/// are decoded one after another. Call ``finish()`` after the last chunk to
/// make sure the input did not stop inside a frame. Malformed or corrupt input
/// throws; it never traps.
///
/// A decompressor owns a `ZSTD_DCtx`, freed on deinit. It is not `Sendable`:
/// use one instance from one task at a time.
public final class ZstdDecompressor {
  private let context: OpaquePointer
  /// Scratch output of `ZSTD_DStreamOutSize()` bytes, owned by `self`.
  private let scratch: UnsafeMutableRawBufferPointer
  /// Whether the input so far ends exactly where a frame ends.
  private var isAtFrameBoundary = false
  private var sawInput = false

  /// Creates a streaming decompressor.
  ///
  /// The corresponding C function is `ZSTD_createDCtx`.
  ///
  /// - Throws: ``ZstdError`` with ``ZstdError/Code/memoryAllocation`` if
  ///   libzstd cannot allocate its context.
  public init() throws(ZstdError) {
    guard let context = ZSTD_createDCtx() else {
      throw ZstdError(
        code: .memoryAllocation, operation: "ZSTD_createDCtx",
        message: "could not allocate a decompression context")
    }
    self.context = context
    self.scratch = .allocate(byteCount: ZSTD_DStreamOutSize(), alignment: 16)
  }

  deinit {
    scratch.deallocate()
    ZSTD_freeDCtx(context)
  }

  /// Decompresses the next chunk of compressed input.
  ///
  /// `input` is fully consumed on return, and every byte it lets libzstd
  /// decode has been appended to `output`.
  ///
  /// The corresponding C function is `ZSTD_decompressStream`.
  ///
  /// - Parameters:
  ///   - input: The next compressed bytes; any split of the stream works.
  ///   - output: The array decompressed bytes are appended to.
  /// - Throws: ``ZstdError`` if the data is malformed or corrupt (including
  ///   a wrong checksum). The decompressor must not be used after that.
  public func decompress(_ input: UnsafeRawBufferPointer, into output: inout [UInt8])
    throws(ZstdError)
  {
    var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
    if input.count > 0 { sawInput = true }
    while true {
      var outBuffer = ZSTD_outBuffer(dst: scratch.baseAddress, size: scratch.count, pos: 0)
      let consumedBefore = inBuffer.pos
      let hint = try checkZstd(
        ZSTD_decompressStream(context, &outBuffer, &inBuffer), "ZSTD_decompressStream")
      output.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[..<outBuffer.pos]))
      // 0 means a frame just ended and is fully flushed. A call that neither
      // reads nor writes (made after a frame ended exactly on a full scratch
      // buffer) returns the next frame's header size and changes nothing.
      if hint == 0 {
        isAtFrameBoundary = true
      } else if inBuffer.pos > consumedBefore || outBuffer.pos > 0 {
        isAtFrameBoundary = false
      }
      // A full scratch buffer may mean more output is pending even after the
      // last input byte was read.
      if inBuffer.pos == inBuffer.size && (hint == 0 || outBuffer.pos < outBuffer.size) { return }
    }
  }

  /// Checks that the input ended at a frame boundary.
  ///
  /// - Throws: ``ZstdError`` with ``ZstdError/Code/truncatedInput`` if no
  ///   input was given or the last frame is incomplete.
  public func finish() throws(ZstdError) {
    guard sawInput, isAtFrameBoundary else {
      throw ZstdError(
        code: .truncatedInput, operation: "ZSTD_decompressStream",
        message: sawInput ? "input ended inside a frame" : "no input")
    }
  }
}

@available(*, unavailable, message: "a ZSTD_DCtx must not be used from two threads at once")
extension ZstdDecompressor: Sendable {}
