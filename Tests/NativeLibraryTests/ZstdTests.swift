import Testing
import Zstd

/// 1 MiB that compresses well but not trivially: runs, a ramp and noise.
private func patternedBytes(count: Int) -> [UInt8] {
  var generator = SeededGenerator(seed: 42)
  return (0..<count).map { index in
    switch (index / 4096) % 3 {
    case 0: UInt8(truncatingIfNeeded: index / 64)
    case 1: UInt8(truncatingIfNeeded: index &* 31 ^ index >> 7)
    default: UInt8.random(in: 0...15, using: &generator)
    }
  }
}

@Suite("Zstd")
struct ZstdTests {
  @Test("Round-trips 1 MiB of patterned data through one-shot compression")
  func oneShotRoundTrip() throws {
    let original = patternedBytes(count: 1 << 20)
    let compressed = try original.withUnsafeBytes { try Zstd.compress($0, level: 3) }
    #expect(compressed.count < original.count / 2)
    let restored = try compressed.withUnsafeBytes {
      try Zstd.decompress($0, expectedSize: original.count)
    }
    #expect(restored == original)
  }

  @Test("Round-trips an empty buffer")
  func emptyRoundTrip() throws {
    let compressed = try Zstd.compress(UnsafeRawBufferPointer(start: nil, count: 0))
    #expect(!compressed.isEmpty)
    let restored = try compressed.withUnsafeBytes { try Zstd.decompress($0, expectedSize: 0) }
    #expect(restored.isEmpty)
  }

  @Test("Round-trips through the streaming compressor and decompressor", arguments: [0, 2])
  func streamingRoundTrip(workerCount: Int32) throws {
    let original = patternedBytes(count: 1 << 20)
    let compressor = try ZstdCompressor(level: 5, workerCount: workerCount)
    var compressed: [UInt8] = []
    try original.withUnsafeBytes { bytes in
      for start in stride(from: 0, to: bytes.count, by: 7919) {
        let chunk = UnsafeRawBufferPointer(rebasing: bytes[start..<min(start + 7919, bytes.count)])
        try compressor.compress(chunk, into: &compressed)
      }
    }
    try compressor.finish(into: &compressed)

    let decompressor = try ZstdDecompressor()
    var restored: [UInt8] = []
    try compressed.withUnsafeBytes { bytes in
      for start in stride(from: 0, to: bytes.count, by: 1013) {
        let chunk = UnsafeRawBufferPointer(rebasing: bytes[start..<min(start + 1013, bytes.count)])
        try decompressor.decompress(chunk, into: &restored)
      }
    }
    try decompressor.finish()
    #expect(restored == original)

    // A streamed frame has no content size; one-shot decompression still
    // checks the size while decoding.
    func decompress(expectedSize: Int) throws(ZstdError) -> [UInt8] {
      let result = compressed.withUnsafeBytes { bytes in
        Result { () throws(ZstdError) in try Zstd.decompress(bytes, expectedSize: expectedSize) }
      }
      return try result.get()
    }
    #expect(try decompress(expectedSize: original.count) == original)
    let tooSmall = #expect(throws: ZstdError.self) {
      try decompress(expectedSize: original.count - 1)
    }
    #expect(tooSmall?.code == .dstSizeTooSmall)
    let tooLarge = #expect(throws: ZstdError.self) {
      try decompress(expectedSize: original.count + 1)
    }
    #expect(tooLarge?.code == .contentSizeMismatch)
  }

  @Test("Writes several frames with one compressor and reads them as one stream")
  func concatenatedFrames() throws {
    let compressor = try ZstdCompressor()
    var compressed: [UInt8] = []
    let parts: [[UInt8]] = [Array("first frame ".utf8), Array("second frame".utf8)]
    for part in parts {
      try part.withUnsafeBytes { try compressor.compress($0, into: &compressed) }
      try compressor.finish(into: &compressed)
    }
    let expected = parts.flatMap { $0 }
    let restored = try compressed.withUnsafeBytes {
      try Zstd.decompress($0, expectedSize: expected.count)
    }
    #expect(restored == expected)
  }

  @Test("Checks a pledged content size before decompressing")
  func pledgedSize() throws {
    let original = patternedBytes(count: 10_000)
    let compressor = try ZstdCompressor(pledgedSize: UInt64(original.count))
    var compressed: [UInt8] = []
    try original.withUnsafeBytes { try compressor.compress($0, into: &compressed) }
    try compressor.finish(into: &compressed)
    let error = #expect(throws: ZstdError.self) {
      try compressed.withUnsafeBytes { try Zstd.decompress($0, expectedSize: 9_999) }
    }
    #expect(error?.code == .contentSizeMismatch)
    #expect(error?.description.contains("10000") == true)
  }

  @Test("Throws, rather than trapping, on corrupt, truncated or foreign input")
  func corruptInput() throws {
    let original = patternedBytes(count: 100_000)
    let compressed = try original.withUnsafeBytes { try Zstd.compress($0) }

    func decompress(_ bytes: [UInt8], expectedSize: Int = 100_000) throws(ZstdError) -> [UInt8] {
      let result = bytes.withUnsafeBytes { buffer in
        Result { () throws(ZstdError) in try Zstd.decompress(buffer, expectedSize: expectedSize) }
      }
      return try result.get()
    }

    var flipped = compressed
    flipped[compressed.count / 2] ^= 0x5A
    #expect(throws: ZstdError.self) { try decompress(flipped) }

    var badChecksum = compressed
    badChecksum[compressed.count - 1] ^= 0x01
    let checksumError = #expect(throws: ZstdError.self) { try decompress(badChecksum) }
    #expect(checksumError?.code == .checksumWrong)

    #expect(throws: ZstdError.self) { try decompress(Array(compressed.dropLast(10))) }
    #expect(throws: ZstdError.self) { try decompress([]) }
    let foreign = #expect(throws: ZstdError.self) { try decompress(Array("not zstd at all".utf8)) }
    #expect(foreign?.code == .prefixUnknown)
    let wrongSize = #expect(throws: ZstdError.self) {
      try decompress(compressed, expectedSize: 100_001)
    }
    #expect(wrongSize?.code == .contentSizeMismatch)

    // Every single-byte corruption of a small frame either throws or, when it
    // only touched a field without effect on decoding, restores the data.
    let small = Array(original.prefix(2_000))
    let smallFrame = try small.withUnsafeBytes { try Zstd.compress($0) }
    for index in smallFrame.indices {
      var corrupt = smallFrame
      corrupt[index] ^= 0xFF
      if let restored = try? decompress(corrupt, expectedSize: small.count) {
        #expect(restored == small, "byte \(index) corrupted silently")
      }
    }

    var generator = SeededGenerator(seed: 7)
    for length in [1, 4, 5, 13, 64, 1000] {
      var garbage = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
      garbage.replaceSubrange(0..<min(4, length), with: [0x28, 0xB5, 0x2F, 0xFD].prefix(length))
      #expect(throws: ZstdError.self) { try decompress(garbage, expectedSize: 4096) }
    }
  }

  @Test("Reports a stream that ends inside a frame")
  func truncatedStream() throws {
    let original = patternedBytes(count: 50_000)
    let compressed = try original.withUnsafeBytes { try Zstd.compress($0) }
    let decompressor = try ZstdDecompressor()
    var restored: [UInt8] = []
    try compressed.dropLast(3).withUnsafeBytes {
      try decompressor.decompress($0, into: &restored)
    }
    let error = #expect(throws: ZstdError.self) { try decompressor.finish() }
    #expect(error?.code == .truncatedInput)

    let corrupt = try ZstdDecompressor()
    var flipped = compressed
    flipped[flipped.count / 2] ^= 0x5A
    #expect(throws: ZstdError.self) {
      try flipped.withUnsafeBytes { try corrupt.decompress($0, into: &restored) }
      try corrupt.finish()
    }
  }

  @Test("Reports the libzstd version and level range")
  func versionAndLevels() throws {
    #expect(Zstd.version.hasPrefix("1."))
    #expect(Zstd.levels.contains(Zstd.defaultLevel))
    #expect(Zstd.levels.contains(19))
  }

  @Test("Decodes a frame that ends exactly on a full output buffer")
  func frameEndingOnBufferBoundary() throws {
    // 128 KiB is ZSTD_DStreamOutSize(), so the last byte of output fills the
    // scratch buffer exactly.
    let original = patternedBytes(count: 128 * 1024)
    let compressed = try original.withUnsafeBytes { try Zstd.compress($0) }
    let decompressor = try ZstdDecompressor()
    var restored: [UInt8] = []
    try compressed.withUnsafeBytes { try decompressor.decompress($0, into: &restored) }
    try decompressor.finish()
    #expect(restored == original)
  }
}
