import QuantKernels
import Testing
import TestSupport

/// Seeded weights like a dequantized INT4 matrix, with all-zero tiles, single
/// outliers, tiny and subnormal values.
func blockTestWeights(rows: Int, columns: Int, seed: UInt64) -> [Float] {
  var rng = SeededRandom(seed: seed)
  var w = (0..<(rows * columns)).map { _ -> Float in
    let q = Float(Int(rng.next() % 16) - 8)
    let s = Float(bitPattern: 0x3C00_0000 | UInt32(rng.next() % 0x80) << 16)  // a BF16 scale near 2⁻⁷
    return q * s
  }
  // An all-zero 8 × 8 corner, an outlier, a tiny value and a subnormal.
  for i in 0..<min(rows, 8) { for j in 0..<min(columns, 8) { w[i * columns + j] = 0 } }
  if w.count > 100 {
    w[100] = 3.0e4
    w[w.count / 2] = -0x1p-130
    w[w.count - 1] = 1e-30
  }
  return w
}

@Suite("FP8 block quantization")
struct FP8BlockTests {
  @Test("Scale shapes are ceil(rows / blockRows) × ceil(columns / blockColumns)")
  func scaleShapes() {
    // Kimi K2 / DeepSeek-V3 tensors (FORMATS.md §4).
    #expect(FP8Block.scaleShape(rows: 576, columns: 7168) == (5, 56))  // kv_a_proj_with_mqa
    #expect(FP8Block.scaleShape(rows: 12288, columns: 1536) == (96, 12))  // q_b_proj
    #expect(FP8Block.scaleShape(rows: 7168, columns: 8192) == (56, 64))  // o_proj
    #expect(FP8Block.scaleShape(rows: 2048, columns: 7168) == (16, 56))  // expert gate/up
    #expect(FP8Block.scaleShape(rows: 0, columns: 5) == (0, 1))
    #expect(FP8Block.scaleShape(rows: 3, columns: 5, blockRows: 2, blockColumns: 5) == (2, 1))
  }

  @Test("The scale rule: amax / 448, 1 for an all-zero tile, never 0")
  func scaleRule() {
    #expect(FP8Block.scale(forAbsMax: 448) == 1)
    #expect(FP8Block.scale(forAbsMax: 0) == 1)
    #expect(FP8Block.scale(forAbsMax: 7) == 7 / Float(448))
    #expect(FP8Block.scale(forAbsMax: 0x1p-140) == 0x1p-140 / 448)
    #expect(FP8Block.scale(forAbsMax: .leastNonzeroMagnitude) == .leastNonzeroMagnitude)
  }

  /// Quantizes with the reference and the fast path (1 and 3 jobs) and compares.
  func checkFastMatchesReference(_ w: [Float], rows: Int, columns: Int, blockRows: Int, blockColumns: Int) {
    let shape = FP8Block.scaleShape(rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns)
    var codes = [UInt8](repeating: 0xEE, count: rows * columns)
    var scales = [Float](repeating: -1, count: shape.rows * shape.columns)
    var nonFinite = 0
    w.withUnsafeBufferPointer { wp in
      codes.withUnsafeMutableBytes { c in
        scales.withUnsafeMutableBufferPointer { s in
          nonFinite = FP8Block.quantizeReference(
            weights: wp, rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns, codes: c, scales: s)
        }
      }
    }
    for jobs in [1, 3] {
      for path in KernelPath.allCases where path.isAvailable {
      var fastCodes = [UInt8](repeating: 0x11, count: rows * columns)
      var fastScales = [Float](repeating: -2, count: shape.rows * shape.columns)
      var fastNonFinite = 0
      w.withUnsafeBufferPointer { wp in
        fastCodes.withUnsafeMutableBytes { c in
          fastScales.withUnsafeMutableBufferPointer { s in
            fastNonFinite = FP8Block.quantize(
              weights: wp, rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns, codes: c,
              scales: s, jobs: jobs, path: path)
          }
        }
      }
      #expect(fastNonFinite == nonFinite, "\(path)")
      #expect(fastScales.map(\.bitPattern) == scales.map(\.bitPattern), "scales \(rows)×\(columns) / \(blockRows)×\(blockColumns) jobs \(jobs) \(path)")
      if let i = zip(fastCodes, codes).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
        Issue.record("\(rows)×\(columns) / \(blockRows)×\(blockColumns) jobs \(jobs) \(path): first bad code at \(i) (row \(i / columns), column \(i % columns)), weight \(w[i]): fast \(hex(fastCodes[i])) reference \(hex(codes[i]))")
      }
      }
    }
    // Dequantize: fast == reference.
    var reference = [Float](repeating: 0, count: rows * columns)
    var fast = [Float](repeating: 1, count: rows * columns)
    codes.withUnsafeBytes { c in
      scales.withUnsafeBufferPointer { s in
        reference.withUnsafeMutableBufferPointer {
          FP8Block.dequantizeReference(codes: c, scales: s, rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns, into: $0)
        }
        fast.withUnsafeMutableBufferPointer {
          FP8Block.dequantize(codes: c, scales: s, rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns, into: $0, jobs: 2)
        }
      }
    }
    #expect(fast.map(\.bitPattern) == reference.map(\.bitPattern))
  }

  @Test("The fast quantizer equals the scalar reference, with tail tiles", arguments: [
    (1, 1, 128, 128), (2, 3, 128, 128), (70, 45, 32, 16), (130, 300, 128, 128), (33, 129, 16, 64), (9, 40, 1, 40), (5, 17, 3, 5),
    // Many bands (each band's maxima are taken during the previous band's codes),
    // more than one strip of 64 tiles, 64-wide vector runs plus 16-wide and masked tails.
    (300, 301, 7, 4), (261, 1000, 128, 80), (256, 1024, 128, 128),
  ])
  func fastMatchesReference(_ rows: Int, _ columns: Int, _ blockRows: Int, _ blockColumns: Int) {
    let w = blockTestWeights(rows: rows, columns: columns, seed: UInt64(rows * 1000 + columns))
    checkFastMatchesReference(w, rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns)
  }

  @Test("Continuous weights: random mantissas over 24 binades below the tile maximum")
  func continuousWeights() {
    let rows = 128
    let columns = 768
    var rng = SeededRandom(seed: 0xC0_17)
    let w = (0..<(rows * columns)).map { _ -> Float in
      let bits = UInt32(truncatingIfNeeded: rng.next())
      // Exponents 2^-24 … 2^0 times a random mantissa, random sign.
      return Float(bitPattern: (bits & 0x8000_0000) | (UInt32(103 + rng.next() % 25) << 23) | (bits & 0x7F_FFFF))
    }
    checkFastMatchesReference(w, rows: rows, columns: columns, blockRows: 128, blockColumns: 128)
  }

  @Test("Quotients within a few ulps of every E4M3 rounding midpoint, for awkward scales")
  func nearMidpoints() {
    // Midpoints between consecutive non-negative E4M3 values (below 448).
    let values = (0..<0x7F).map { Float8E4M3FN.decode(UInt8($0)) }
    let midpoints = zip(values, values.dropFirst()).map { ($0 + $1) / 2 }
    let columns = 128
    var tiles: [Float] = []
    var tileRows = 0
    for scaleBits in [0x3F80_0000, 0x3BFF_FFFF, 0x3C00_0001, 0x3A9A_9A9B, 0x3D4C_CCCD] as [UInt32] {
      let s0 = Float(bitPattern: scaleBits)
      var tile: [Float] = []
      for m in midpoints {
        var w = m * s0
        for _ in 0..<3 { w = w.nextDown }
        for _ in 0..<7 {
          tile.append(w)
          tile.append(-w)
          w = w.nextUp
        }
      }
      // Pad to whole rows; the first element sets amax = 448 · s0, so s = s0 up to rounding.
      tile[0] = 448 * s0
      while tile.count % columns != 0 { tile.append(0) }
      tileRows = tile.count / columns
      tiles += tile
    }
    // One tile (band) per scale.
    checkFastMatchesReference(tiles, rows: tiles.count / columns, columns: columns, blockRows: tileRows, blockColumns: 128)
  }

  @Test("Edge values in tiles: exact zeros, signed zeros, subnormals, FP32 extremes")
  func fastMatchesReferenceOnEdges() {
    let rows = 20
    let columns = 37
    var rng = SeededRandom(seed: 77)
    let finiteEdges = edgeBits.filter { Float(bitPattern: $0).isFinite }
    let w = (0..<(rows * columns)).map { _ in Float(bitPattern: finiteEdges[Int(rng.next() % UInt64(finiteEdges.count))]) }
    checkFastMatchesReference(w, rows: rows, columns: columns, blockRows: 4, blockColumns: 16)
  }

  @Test("Non-finite weights: left out of amax, NaN → 0x7F/0xFF, ±inf → ±448, and counted")
  func nonFiniteWeights() {
    let rows = 2
    let columns = 20
    var w = [Float](repeating: 0.5, count: rows * columns)
    w[1] = 2
    w[3] = .nan
    w[4] = -.nan
    w[5] = .infinity
    w[6] = -.infinity
    w[25] = .nan  // row 1 of the same tile
    checkFastMatchesReference(w, rows: rows, columns: columns, blockRows: 2, blockColumns: 20)
    var codes = [UInt8](repeating: 0, count: rows * columns)
    var scales: [Float] = [0]
    let n = w.withUnsafeBufferPointer { wp in
      codes.withUnsafeMutableBytes { c in
        scales.withUnsafeMutableBufferPointer { s in
          FP8Block.quantize(weights: wp, rows: rows, columns: columns, blockRows: 2, blockColumns: 20, codes: c, scales: s)
        }
      }
    }
    #expect(n == 5)
    #expect(scales[0] == 2 / Float(448))
    #expect(codes[1] == 0x7E && codes[3] == 0x7F && codes[4] == 0xFF && codes[5] == 0x7E && codes[6] == 0xFE && codes[25] == 0x7F)
  }

  @Test("Round trip: the tile maximum maps to ±448 exactly, others within half an E4M3 step")
  func roundTripError() {
    let rows = 64
    let columns = 96
    let blockRows = 32
    let blockColumns = 32
    let w = blockTestWeights(rows: rows, columns: columns, seed: 4).map { Swift.max(-1e3, Swift.min(1e3, $0)) }
    let shape = FP8Block.scaleShape(rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns)
    var codes = [UInt8](repeating: 0, count: rows * columns)
    var scales = [Float](repeating: 0, count: shape.rows * shape.columns)
    var back = [Float](repeating: 0, count: rows * columns)
    w.withUnsafeBufferPointer { wp in
      codes.withUnsafeMutableBytes { c in
        scales.withUnsafeMutableBufferPointer { s in
          _ = FP8Block.quantize(weights: wp, rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns, codes: c, scales: s)
        }
      }
    }
    codes.withUnsafeBytes { c in
      scales.withUnsafeBufferPointer { s in
        back.withUnsafeMutableBufferPointer {
          FP8Block.dequantize(codes: c, scales: s, rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns, into: $0)
        }
      }
    }
    for bi in 0..<shape.rows {
      for bj in 0..<shape.columns {
        let s = scales[bi * shape.columns + bj]
        var amax: Float = 0
        for i in (bi * blockRows)..<((bi + 1) * blockRows) {
          for j in (bj * blockColumns)..<((bj + 1) * blockColumns) { amax = Swift.max(amax, abs(w[i * columns + j])) }
        }
        #expect(s == FP8Block.scale(forAbsMax: amax))
        for i in (bi * blockRows)..<((bi + 1) * blockRows) {
          for j in (bj * blockColumns)..<((bj + 1) * blockColumns) {
            let x = w[i * columns + j]
            let y = back[i * columns + j]
            if abs(x) == amax && amax > 0 { #expect(codes[i * columns + j] & 0x7F == 0x7E) }
            // E4M3: relative step 2⁻³ for normals (half: 2⁻⁴), absolute step 2⁻⁹·s below 2⁻⁶·s; plus FP32 rounding.
            let bound = Swift.max(abs(x) * 0x1p-4, s * 0x1p-10) * 1.0001
            #expect(abs(x - y) <= bound, "(\(i), \(j)): \(x) → \(y), scale \(s)")
          }
        }
      }
    }
  }

  @Test("Per-channel FP8 is FP8Block with one tile per row")
  func perChannel() {
    let rows = 7
    let columns = 50
    let w = blockTestWeights(rows: rows, columns: columns, seed: 8)
    var a = [UInt8](repeating: 0, count: rows * columns)
    var b = a
    var r = a
    var sa = [Float](repeating: 0, count: rows)
    var sb = sa
    var sr = sa
    w.withUnsafeBufferPointer { wp in
      a.withUnsafeMutableBytes { c in sa.withUnsafeMutableBufferPointer { _ = FP8Channel.quantize(weights: wp, rows: rows, columns: columns, codes: c, scales: $0, jobs: 2) } }
      r.withUnsafeMutableBytes { c in sr.withUnsafeMutableBufferPointer { _ = FP8Channel.quantizeReference(weights: wp, rows: rows, columns: columns, codes: c, scales: $0) } }
      b.withUnsafeMutableBytes { c in
        sb.withUnsafeMutableBufferPointer {
          _ = FP8Block.quantizeReference(weights: wp, rows: rows, columns: columns, blockRows: 1, blockColumns: columns, codes: c, scales: $0)
        }
      }
    }
    #expect(a == b && r == b)
    #expect(sa == sb && sr == sb)
    for i in 0..<rows {
      let amax = w[(i * columns)..<((i + 1) * columns)].map(abs).max()!
      #expect(sa[i] == FP8Block.scale(forAbsMax: amax))
    }
    var back = [Float](repeating: 0, count: rows * columns)
    var backReference = back
    a.withUnsafeBytes { c in
      sa.withUnsafeBufferPointer { s in
        back.withUnsafeMutableBufferPointer { FP8Channel.dequantize(codes: c, scales: s, rows: rows, columns: columns, into: $0) }
        backReference.withUnsafeMutableBufferPointer { FP8Channel.dequantizeReference(codes: c, scales: s, rows: rows, columns: columns, into: $0) }
      }
    }
    #expect(back == backReference)
    #expect(back[20] == Float8E4M3FN.decode(a[20]) * sa[0])
  }

  @Test("A scales buffer that is too small traps")
  func shortScalesTrap() async {
    await #expect(processExitsWith: .failure) {
      let w = [Float](repeating: 1, count: 6)
      var codes = [UInt8](repeating: 0, count: 6)
      var scales = [Float](repeating: 0, count: 1)
      w.withUnsafeBufferPointer { wp in
        codes.withUnsafeMutableBytes { c in
          scales.withUnsafeMutableBufferPointer {
            _ = FP8Block.quantize(weights: wp, rows: 2, columns: 3, blockRows: 1, blockColumns: 3, codes: c, scales: $0)
          }
        }
      }
    }
  }
}

// MARK: - Fixture

/// A tiny `.safetensors` reader for test fixtures: 8-byte little-endian header
/// length, JSON header, data (QuantKernelsTests does not depend on SafeTensors).
struct FixtureTensors {
  struct Entry {
    let dtype: String
    let shape: [Int]
    let bytes: ArraySlice<UInt8>
  }

  let entries: [String: Entry]

  init(path: String) throws {
    let file = try readFile(path)
    let n = (0..<8).reduce(0) { $0 | Int(file[$1]) << (8 * $1) }
    guard let header = MiniJSON.parse(Array(file[8..<(8 + n)])) else { throw FixtureError.badHeader(path) }
    var entries: [String: Entry] = [:]
    for (name, info) in header.members where name != "__metadata__" {
      guard let dtype = info["dtype"]?.string, let shape = info["shape"]?.array?.compactMap(\.int),
        let offsets = info["data_offsets"]?.array?.compactMap(\.int), offsets.count == 2
      else { throw FixtureError.badHeader(path) }
      entries[name] = Entry(dtype: dtype, shape: shape, bytes: file[(8 + n + offsets[0])..<(8 + n + offsets[1])])
    }
    self.entries = entries
  }

  func entry(_ name: String) throws -> Entry {
    guard let e = entries[name] else { throw FixtureError.missing(name) }
    return e
  }

  /// The tensor as `Float`s: F32 as is, BF16 widened exactly.
  func floats(_ name: String) throws -> [Float] {
    let e = try entry(name)
    let b = Array(e.bytes)
    switch e.dtype {
    case "F32":
      return stride(from: 0, to: b.count, by: 4).map {
        Float(bitPattern: UInt32(b[$0]) | UInt32(b[$0 + 1]) << 8 | UInt32(b[$0 + 2]) << 16 | UInt32(b[$0 + 3]) << 24)
      }
    case "BF16":
      return stride(from: 0, to: b.count, by: 2).map { BFloat16.decode(UInt16(b[$0]) | UInt16(b[$0 + 1]) << 8) }
    default: throw FixtureError.dtype(name, e.dtype)
    }
  }

  func int32s(_ name: String) throws -> [Int] {
    let b = Array(try entry(name).bytes)
    return stride(from: 0, to: b.count, by: 4).map {
      Int(Int32(bitPattern: UInt32(b[$0]) | UInt32(b[$0 + 1]) << 8 | UInt32(b[$0 + 2]) << 16 | UInt32(b[$0 + 3]) << 24))
    }
  }

  enum FixtureError: Error {
    case badHeader(String)
    case missing(String)
    case dtype(String, String)
  }
}

@Suite("FP8 block quantization against the fixture")
struct FP8BlockFixtureTests {
  static let cases = ["rand256x256", "special128x384", "tail200x300", "kva576x512", "channel64x96", "block64_130x70"]

  @Test("Codes, scales and dequantized values equal fp8-block-cases.safetensors", arguments: cases)
  func matchesFixture(_ name: String) throws {
    let file = try FixtureTensors(path: numericFixture("fp8-block-cases.safetensors"))
    let input = try file.entry("\(name).input")
    let (rows, columns) = (input.shape[0], input.shape[1])
    let block = try file.int32s("\(name).block_size")
    let w = try file.floats("\(name).input")
    let wantCodes = Array(try file.entry("\(name).weight").bytes)
    let wantScales = try file.floats("\(name).weight_scale_inv")
    let shape = FP8Block.scaleShape(rows: rows, columns: columns, blockRows: block[0], blockColumns: block[1])
    #expect(try file.entry("\(name).weight_scale_inv").shape == [shape.rows, shape.columns])

    var codes = [UInt8](repeating: 0, count: rows * columns)
    var scales = [Float](repeating: 0, count: shape.rows * shape.columns)
    var referenceCodes = codes
    var referenceScales = scales
    w.withUnsafeBufferPointer { wp in
      codes.withUnsafeMutableBytes { c in
        scales.withUnsafeMutableBufferPointer { s in
          #expect(FP8Block.quantize(weights: wp, rows: rows, columns: columns, blockRows: block[0], blockColumns: block[1], codes: c, scales: s, jobs: 2) == 0)
        }
      }
      referenceCodes.withUnsafeMutableBytes { c in
        referenceScales.withUnsafeMutableBufferPointer { s in
          _ = FP8Block.quantizeReference(weights: wp, rows: rows, columns: columns, blockRows: block[0], blockColumns: block[1], codes: c, scales: s)
        }
      }
    }
    #expect(scales.map(\.bitPattern) == wantScales.map(\.bitPattern), "\(name) scales")
    #expect(referenceScales.map(\.bitPattern) == wantScales.map(\.bitPattern), "\(name) reference scales")
    for (label, got) in [("fast", codes), ("reference", referenceCodes)] {
      #expect(got.count == wantCodes.count)
      let bad = got.indices.filter { got[$0] != wantCodes[$0] }
      if let i = bad.first {
        Issue.record("\(name) \(label): \(bad.count) bad codes; first at [\(i / columns), \(i % columns)], input \(w[i]): expected \(hex(wantCodes[i])), got \(hex(got[i]))")
      }
    }
    if name == "channel64x96" {
      var channelCodes = [UInt8](repeating: 0, count: rows * columns)
      var channelScales = [Float](repeating: 0, count: rows)
      w.withUnsafeBufferPointer { wp in
        channelCodes.withUnsafeMutableBytes { c in
          channelScales.withUnsafeMutableBufferPointer { _ = FP8Channel.quantize(weights: wp, rows: rows, columns: columns, codes: c, scales: $0) }
        }
      }
      #expect(channelCodes == wantCodes && channelScales == wantScales)
    }

    // Dequantize: decode(code) · s in FP32, as stored where the fixture has it.
    var back = [Float](repeating: 0, count: rows * columns)
    wantCodes.withUnsafeBytes { c in
      wantScales.withUnsafeBufferPointer { s in
        back.withUnsafeMutableBufferPointer {
          FP8Block.dequantize(codes: c, scales: s, rows: rows, columns: columns, blockRows: block[0], blockColumns: block[1], into: $0)
        }
      }
    }
    if file.entries["\(name).dequant"] != nil {
      #expect(back.map(\.bitPattern) == (try file.floats("\(name).dequant")).map(\.bitPattern), "\(name) dequant")
    }
    for i in stride(from: 0, to: rows * columns, by: 7) {
      let s = wantScales[(i / columns / block[0]) * shape.columns + (i % columns) / block[1]]
      #expect(back[i] == Float8E4M3FN.decode(wantCodes[i]) * s)
    }
  }
}
