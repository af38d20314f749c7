import QuantKernels
import Testing
import TestSupport

#if canImport(Glibc)
  import Glibc
#endif

/// `ckpt requantize`'s kernel: exact grid recovery, the rules, and the fast C
/// kernel against the scalar reference.
@Suite("INT4 requantize")
struct Int4RequantizeTests {
  static let paths = KernelPath.allCases.filter(\.isAvailable)

  /// A matrix on an INT4 grid made by `rule` from N(0, 0.02) weights, as the
  /// input dtype `ckpt convert` would write it, with the codes and scales.
  static func grid(
    rows: Int, columns: Int, rule: Int4ScaleRule, inputType: Int4OutputType, seed: UInt64
  ) -> (input: [UInt8], codes: [Int8], scales: [UInt16]) {
    var rng = SeededRandom(seed: seed)
    let groups = columns / 32
    var codes = [Int8](repeating: 0, count: rows * columns)
    var scales = [UInt16](repeating: 0, count: rows * groups)
    var input: [UInt8] = []
    for r in 0..<rows {
      for g in 0..<groups {
        let w: [Float] = (0..<32).map { _ in
          // Box-Muller, N(0, 0.02).
          let u1 = max(Double(rng.next() >> 11) * 0x1p-53, 1e-12)
          let u2 = Double(rng.next() >> 11) * 0x1p-53
          return Float(0.02 * (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
        }
        let wb = w.map { BFloat16.decode(BFloat16.encode($0)) }
        let m = wb.map { abs($0) }.max()!
        let s = Int4Requantize.ruleScale(m, rule, .bf16)
        scales[r * groups + g] = UInt16(s)
        for j in 0..<32 {
          codes[r * columns + g * 32 + j] = Int4Requantize.ruleCode(wb[j], Int4Requantize.scaleValue(s, .bf16), rule, .bf16)
        }
      }
    }
    for i in 0..<(rows * columns) {
      let bits = Int4Dequantize.element(
        code: codes[i], zeroPoint: 0, scaleBits: UInt32(scales[i / 32]), scaleType: .bf16, outputType: inputType
      ).bits
      switch inputType {
      case .f32: withUnsafeBytes(of: bits.littleEndian) { input += $0 }
      case .bf16, .f16: withUnsafeBytes(of: UInt16(bits).littleEndian) { input += $0 }
      }
    }
    return (input, codes, scales)
  }

  struct Output: Equatable, CustomStringConvertible {
    var packed: [UInt8]
    var scales: [UInt8]
    var counts: [Int]
    // Short, so that a failure does not print kilobytes.
    var description: String {
      "packed \(packed.count) B (sum \(packed.reduce(0) { $0 &+ Int($1) })), scales sum \(scales.reduce(0) { $0 &+ Int($1) }), counts \(counts)"
    }
  }

  static func run(
    _ input: [UInt8], _ t: Int4OutputType, rows: Int, columns: Int, options: Int4RequantizeOptions, reference: Bool,
    threads: Int = 1, path: KernelPath = .automatic
  ) -> (Output, Int4RequantizeStats) {
    var packed = [UInt8](repeating: 0, count: rows * Int4Packing.bytesPerRow(columns: columns))
    var scales = [UInt8](repeating: 0, count: rows * columns / 32 * 2)
    let stats = input.withUnsafeBytes { i in
      packed.withUnsafeMutableBytes { p in
        scales.withUnsafeMutableBytes { s in
          reference
            ? Int4Requantize.matrixReference(
              input: i, inputType: t, rows: rows, columns: columns, groupSize: 32, scaleType: .bf16, options: options, packed: p,
              scales: s)
            : Int4Requantize.matrix(
              input: i, inputType: t, rows: rows, columns: columns, groupSize: 32, scaleType: .bf16, options: options, packed: p,
              scales: s, threads: threads, path: path)
        }
      }
    }
    return (Output(packed: packed, scales: scales, counts: stats.counts), stats)
  }

  static func codes(ofPacked p: [UInt8], rows: Int, columns: Int) -> [Int8] {
    var out = [Int8](repeating: 0, count: rows * columns)
    p.withUnsafeBytes { raw in
      out.withUnsafeMutableBufferPointer { Int4Packing.unpack(raw, rows: rows, columns: columns, into: $0) }
    }
    return out
  }

  @Test(
    "A grid made by either rule, written as FP32, FP16 or BF16, comes back: codes and scales as made, every group exact",
    arguments: [Int4ScaleRule.qat7, .minmax], [Int4OutputType.f32, .f16, .bf16])
  func roundTrip(rule: Int4ScaleRule, type: Int4OutputType) {
    let (rows, columns) = (24, 256)
    let g = Self.grid(rows: rows, columns: columns, rule: rule, inputType: type, seed: 11)
    let (out, stats) = Self.run(g.input, type, rows: rows, columns: columns, options: .init(rule: rule), reference: false)
    #expect(stats.groups == rows * columns / 32)
    #expect(stats.requantized == 0)
    #expect(stats.recovered + stats.ambiguous == stats.groups)
    #expect(stats.sumSquaredError == 0)
    if type != .bf16 {
      // FP32 and FP16 keep q·s exactly: the original pair is the only one.
      #expect(Self.codes(ofPacked: out.packed, rows: rows, columns: columns) == g.codes)
      #expect(out.scales == g.scales.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] })
    }
    // Dequantizing the output gives back the input, bit for bit.
    let codes = Self.codes(ofPacked: out.packed, rows: rows, columns: columns)
    var again: [UInt8] = []
    for i in 0..<(rows * columns) {
      let s = UInt32(out.scales[2 * (i / 32)]) | UInt32(out.scales[2 * (i / 32) + 1]) << 8
      let bits = Int4Dequantize.element(code: codes[i], zeroPoint: 0, scaleBits: s, scaleType: .bf16, outputType: type).bits
      switch type {
      case .f32: withUnsafeBytes(of: bits.littleEndian) { again += $0 }
      case .bf16, .f16: withUnsafeBytes(of: UInt16(bits).littleEndian) { again += $0 }
      }
    }
    #expect(again == g.input)
    // The signatures rule detection reads.
    if rule == .qat7 {
      #expect(stats.minusEightGroups == 0)
      #expect(stats.maxCodeHistogram[7] == stats.recovered)
    } else {
      #expect(stats.minusEightGroups > stats.recovered / 8)
      #expect(stats.maxCodeHistogram[7] + stats.maxCodeHistogram[8] == stats.recovered)
    }
  }

  @Test("Off-grid weights are quantized with the rule; the MSE search never does worse than the plain rule")
  func offGrid() {
    let (rows, columns) = (16, 128)
    var rng = SeededRandom(seed: 5)
    let bits: [UInt16] = (0..<(rows * columns)).map { _ in BFloat16.encode(Float(Int32(truncatingIfNeeded: rng.next())) * 0x1p-38) }
    let input = bits.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
    for rule in Int4ScaleRule.allCases {
      let (plainOut, plain) = Self.run(input, .bf16, rows: rows, columns: columns, options: .init(rule: rule), reference: true)
      #expect(plain.requantized == plain.groups)
      // Each group's codes and scale are the rule's.
      let codes = Self.codes(ofPacked: plainOut.packed, rows: rows, columns: columns)
      for gi in 0..<(rows * columns / 32) {
        let x = (0..<32).map { BFloat16.decode(bits[gi * 32 + $0]) }
        let s = Int4Requantize.ruleScale(x.map { abs($0) }.max()!, rule, .bf16)
        #expect(UInt32(plainOut.scales[2 * gi]) | UInt32(plainOut.scales[2 * gi + 1]) << 8 == s)
        for j in 0..<32 {
          #expect(codes[gi * 32 + j] == Int4Requantize.ruleCode(x[j], Int4Requantize.scaleValue(s, .bf16), rule, .bf16))
        }
      }
      let (_, mse) = Self.run(input, .bf16, rows: rows, columns: columns, options: .init(rule: rule, mse: true), reference: true)
      #expect(mse.plainSumSquaredError == plain.sumSquaredError)
      #expect(mse.sumSquaredError < plain.sumSquaredError)
    }
  }

  @Test("Hand-made groups: codes only 0 and ±7 are ambiguous; a −0 or one value off the grid is requantized; +0 groups are ambiguous")
  func handMade() {
    let s: Float = 0.00390625 * 1.25  // a BF16 scale
    func group(_ q: [Int]) -> [UInt32] { q.map { UInt32(BFloat16.encode(Float($0) * s)) } }
    let base = (0..<32).map { [-7, -3, 0, 1, 5, 7, 2, -6][$0 % 8] }
    let r = Int4Requantize.groupReference(bits: group(base), inputType: .bf16, scaleType: .bf16, options: .init(rule: .qat7))
    #expect(r.outcome == .recovered)
    #expect(r.codes.map(Int.init) == base)
    #expect(Int4Requantize.scaleValue(r.scaleBits, .bf16) == s)

    let sevens = (0..<32).map { [0, 7, -7][$0 % 3] }
    let a = Int4Requantize.groupReference(bits: group(sevens), inputType: .bf16, scaleType: .bf16, options: .init(rule: .qat7))
    #expect(a.outcome == .ambiguous)
    #expect(a.codes.map(Int.init) == sevens)  // qat7 prefers a largest code of 7
    #expect(a.exactScales.count > 1)

    var negZero = group(base)
    negZero[2] = 0x8000
    #expect(Int4Requantize.groupReference(bits: negZero, inputType: .bf16, scaleType: .bf16, options: .init(rule: .qat7)).outcome == .requantized)
    var off = group(base)
    off[3] += 1
    #expect(Int4Requantize.groupReference(bits: off, inputType: .bf16, scaleType: .bf16, options: .init(rule: .qat7)).outcome == .requantized)
    let zero = Int4Requantize.groupReference(bits: Array(repeating: 0, count: 32), inputType: .bf16, scaleType: .bf16, options: .init(rule: .minmax))
    #expect(zero.outcome == .ambiguous && zero.codes.allSatisfy { $0 == 0 })
    #expect(zero.scaleBits == Int4Requantize.zeroGroupScale(.minmax, .bf16))
  }

  @Test("compressed-tensors' rounding of x/s in BF16: 4.51 rounds to 4.5 then to 4 under minmax, to 5 under qat7")
  func minmaxRoundsQuotientInModelDtype() {
    let s: Float = 1
    #expect(Int4Requantize.ruleCode(4.51, s, .minmax, .bf16) == 4)
    #expect(Int4Requantize.ruleCode(4.51, s, .qat7, .bf16) == 5)
    #expect(Int4Requantize.ruleCode(-7.5, s, .minmax, .bf16) == -8)
    #expect(Int4Requantize.ruleCode(7.5, s, .minmax, .bf16) == 7)
    #expect(Int4Requantize.ruleCode(-7.5, s, .qat7, .bf16) == -7)
    // Scales: absmax / 7.5 with an FP32 quotient rounded to BF16; the floor is 2^-23.
    #expect(Int4Requantize.ruleScale(0, .minmax, .bf16) == UInt32(BFloat16.encode(0x1p-23)))
    #expect(Int4Requantize.ruleScale(0, .qat7, .bf16) == UInt32(BFloat16.encode(1e-5)))
  }

  /// Groups of every kind mixed: on /7 and /7.5 grids, ambiguous, zero, −0, off-grid, tiny and huge.
  static func mixed(rows: Int, columns: Int, type: Int4OutputType, seed: UInt64) -> [UInt8] {
    let a = grid(rows: rows, columns: columns, rule: .qat7, inputType: type, seed: seed).input
    let b = grid(rows: rows, columns: columns, rule: .minmax, inputType: type, seed: seed + 1).input
    let e = type.byteSize
    var rng = SeededRandom(seed: seed + 2)
    var out: [UInt8] = []
    for gi in 0..<(rows * columns / 32) {
      let range = (gi * 32 * e)..<((gi + 1) * 32 * e)
      var chunk = Array((gi % 2 == 0 ? a : b)[range])
      switch gi % 9 {
      case 2: chunk = [UInt8](repeating: 0, count: 32 * e)
      case 3: chunk[e - 1] ^= 0x80  // flip a sign: off the grid, or −0
      case 4: chunk[0] ^= 1  // one value off the grid
      case 5:  // only 0 and ±7 multiples: ambiguous
        for j in 0..<32 where j % 3 != 0 {
          let v = Float([7, -7][j % 2]) * 0.0078125
          let bits: UInt32 = type == .f32 ? v.bitPattern : type == .bf16 ? UInt32(BFloat16.encode(v)) : UInt32(Float16Bits.encode(v))
          for k in 0..<e { chunk[j * e + k] = UInt8(truncatingIfNeeded: bits >> (8 * k)) }
        }
        for j in 0..<32 where j % 3 == 0 { for k in 0..<e { chunk[j * e + k] = 0 } }
      case 6:  // tiny values (FP16 subnormals)
        for j in 0..<32 {
          let v = Float(Int(rng.next() % 15) - 7) * 0x1p-22
          let bits: UInt32 = type == .f32 ? v.bitPattern : type == .bf16 ? UInt32(BFloat16.encode(v)) : UInt32(Float16Bits.encode(v))
          for k in 0..<e { chunk[j * e + k] = UInt8(truncatingIfNeeded: bits >> (8 * k)) }
        }
      case 7:  // all codes even: a second pair with twice the scale
        for j in 0..<32 {
          let v = Float(2 * (Int(rng.next() % 7) - 3)) * 0.001953125
          let bits: UInt32 = type == .f32 ? v.bitPattern : type == .bf16 ? UInt32(BFloat16.encode(v)) : UInt32(Float16Bits.encode(v))
          for k in 0..<e { chunk[j * e + k] = UInt8(truncatingIfNeeded: bits >> (8 * k)) }
        }
      default: break
      }
      out += chunk
    }
    return out
  }

  @Test(
    "The C kernel equals the scalar reference on every path and thread count, both rules, with and without MSE",
    arguments: [Int4OutputType.f32, .f16, .bf16])
  func fastEqualsReference(type: Int4OutputType) {
    let (rows, columns) = (18, 288)
    let input = Self.mixed(rows: rows, columns: columns, type: type, seed: 21)
    for rule in Int4ScaleRule.allCases {
      for mse in [false, true] {
        let options = Int4RequantizeOptions(rule: rule, mse: mse)
        let (ref, rs) = Self.run(input, type, rows: rows, columns: columns, options: options, reference: true)
        #expect(rs.recovered > 0 && rs.ambiguous > 0 && rs.requantized > 0 && rs.zeroGroups > 0)
        for path in Self.paths {
          for threads in [1, 3] {
            let (fast, fs) = Self.run(input, type, rows: rows, columns: columns, options: options, reference: false, threads: threads, path: path)
            #expect(fast == ref, "\(rule) mse \(mse) \(path) \(threads)")
            #expect(abs(fs.sumSquaredError - rs.sumSquaredError) <= 1e-9 * max(1, rs.sumSquaredError))
            #expect(abs(fs.plainSumSquaredError - rs.plainSumSquaredError) <= 1e-9 * max(1, rs.plainSumSquaredError))
            #expect(fs.maxAbsError == rs.maxAbsError)
          }
        }
      }
    }
  }
}
