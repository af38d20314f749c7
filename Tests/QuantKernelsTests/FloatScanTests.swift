import QuantKernels
import Testing
import TestSupport

@Suite("Float scans")
struct FloatScanTests {
  /// Random bytes with a high density of special patterns for `format`.
  static func data(_ format: ScanFormat, count: Int, seed: UInt64) -> [UInt8] {
    var rng = SeededRandom(seed: seed)
    let specials: [UInt64] =
      switch format {
      case .bf16: [0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFFF, 0x0000, 0x8000, 0x7F7F, 0x0001]
      case .f16: [0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x0000, 0x8000, 0x7BFF, 0x0001]
      case .f32: [0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0x0000_0000, 0x8000_0000, 0x7F7F_FFFF]
      case .f64: [0x7FF0_0000_0000_0000, 0xFFF8_0000_0000_0000, 0, 0x8000_0000_0000_0000]
      case .f8E4M3FN: [0x7F, 0xFF, 0x7E, 0xFE, 0x00, 0x80, 0x01]
      case .f8E5M2: [0x7C, 0xFC, 0x7E, 0x7F, 0x7B, 0x00, 0x80]
      }
    var out: [UInt8] = []
    let size = format.byteSize
    for _ in 0..<count {
      let v = rng.next() % 4 == 0 ? specials[Int(rng.next() % UInt64(specials.count))] : rng.next()
      for b in 0..<size { out.append(UInt8(truncatingIfNeeded: v >> UInt64(8 * b))) }
    }
    return out
  }

  @Test("The fast non-finite count equals the scalar reference", arguments: ScanFormat.allCases)
  func fastMatchesReference(_ format: ScanFormat) {
    for (n, seed) in [(0, 1), (1, 2), (3, 3), (7, 4), (64, 5), (1000, 6), (70_001, 7)] as [(Int, UInt64)] {
      let bytes = Self.data(format, count: n, seed: seed)
      bytes.withUnsafeBytes { raw in
        // Unaligned too: drop the first byte and re-slice to whole elements.
        #expect(FloatScan.countNonFinite(raw, format) == FloatScan.countReference(raw, format).nonFinite, "\(format) n=\(n)")
        if n > 2 {
          // The same elements at an odd address.
          let elements = Array(bytes[format.byteSize...])
          let padded = [0] + elements
          padded.withUnsafeBytes { p in
            let view = UnsafeRawBufferPointer(rebasing: p[1...])
            elements.withUnsafeBytes { c in
              #expect(FloatScan.countNonFinite(view, format) == FloatScan.countReference(c, format).nonFinite, "\(format) n=\(n) unaligned")
            }
          }
        }
      }
    }
  }

  @Test("Every special pattern is classified as the reference defines it")
  func classify() {
    #expect(FloatScan.classify(0x7F80, .bf16) == (1, 0, 0))  // +inf
    #expect(FloatScan.classify(0xFFC0, .bf16) == (1, 0, 0))  // NaN
    #expect(FloatScan.classify(0x8000, .bf16) == (0, 1, 0))  // -0
    #expect(FloatScan.classify(0xBF80, .bf16) == (0, 0, 1))  // -1
    #expect(FloatScan.classify(0x7E, .f8E4M3FN) == (0, 0, 0))  // 448 is finite
    #expect(FloatScan.classify(0x7F, .f8E4M3FN) == (1, 0, 0))  // NaN
    #expect(FloatScan.classify(0x7C, .f8E5M2) == (1, 0, 0))  // inf
    #expect(FloatScan.value(bits: 0x7E, .f8E4M3FN) == 448)
    #expect(FloatScan.value(bits: 0x01, .f8E4M3FN) == 0x1p-9)
  }

  @Test("Non-zero INT4 padding nibbles are counted per row")
  func padding() {
    // 2 rows of 10 columns: 2 words per row; the second word uses 2 nibbles.
    var words: [UInt32] = [0, 0x0000_00CB, 0, 0x0000_10CB]
    let n = words.withUnsafeBytes { PackedInt4Scan.countNonzeroPadding($0, rows: 2, columns: 10) }
    #expect(n == 1)
    words[1] = 0xF000_00CB
    #expect(words.withUnsafeBytes { PackedInt4Scan.countNonzeroPadding($0, rows: 2, columns: 10) } == 2)
  }
}
