import CQuantKernels
import Dispatch

/// The rule that gives a group its scale when no exact (scale, codes) pair
/// reproduces it, and that breaks ties between several exact pairs.
///
/// FORMATS.md §2.4–2.5 and §3.6. `m` is the group's largest magnitude, `RNE_s`
/// rounds to the scale dtype, quotients are FP32 and correctly rounded.
public enum Int4ScaleRule: String, Sendable, CaseIterable, CustomStringConvertible {
  /// The grid Kimi K2 Thinking's QAT evidence points to (THUDM/slime's fake
  /// quantizer): `s = RNE_s(max(m / 7, 1e-5))`, `q = clamp(rne(x / s), −7, 7)`.
  case qat7
  /// compressed-tensors' default (`calculate_qparams` + `_quantize`) on a model
  /// of the scale dtype: `s = max(RNE_s(m / 7.5), RNE_s(2⁻²³))`,
  /// `q = rne(clamp(RNE_s(x / s), −8, 7))`; the quotient is rounded to the
  /// model dtype before the clamp, as torch does for a BF16 model.
  case minmax

  public var description: String { rawValue }

  /// Preferred largest code magnitude first: which exact pair a rule would
  /// have produced when several reproduce a group.
  public var preference: [Int] {
    switch self {
    case .qat7: [7, 6, 5, 4, 3, 2, 1, 8]
    case .minmax: [7, 8, 6, 5, 4, 3, 2, 1]
    }
  }
}

/// How ``Int4Requantize`` treats each group.
public struct Int4RequantizeOptions: Sendable, Equatable {
  /// The rule for groups off every grid, and the tie-break between exact pairs.
  public var rule: Int4ScaleRule
  /// Search each off-grid group's scale for the least squared error
  /// (``Int4Requantize/mseDivisors``) instead of taking the rule's.
  public var mse: Bool
  public init(rule: Int4ScaleRule, mse: Bool = false) {
    self.rule = rule
    self.mse = mse
  }
}

/// What happened to one group.
public enum Int4GroupOutcome: UInt8, Sendable {
  /// Exactly one (scale, codes) pair reproduces the input bit for bit.
  case recovered = 0
  /// Several pairs reproduce it (or the group is all +0); the rule chose.
  case ambiguous = 1
  /// No pair reproduces it; quantized with the rule (or the MSE search).
  case requantized = 2
}

/// Counts and error sums of a requantization; they add up over tensors.
public struct Int4RequantizeStats: Sendable, Equatable {
  public var groups = 0
  public var recovered = 0
  public var ambiguous = 0
  public var requantized = 0
  /// Groups whose values are all +0 (counted in ``ambiguous``: any scale fits).
  public var zeroGroups = 0
  /// NaN or ±inf inputs (they cannot be quantized; callers refuse them).
  public var nonFinite = 0
  /// Codes of exactly reproduced groups (recovered and ambiguous), by `q + 8`.
  public var codeHistogram = [Int](repeating: 0, count: 16)
  /// Recovered (unambiguous) non-zero groups by their largest `|q|`, 0…8.
  public var maxCodeHistogram = [Int](repeating: 0, count: 9)
  /// Recovered (unambiguous) groups holding the code −8.
  public var minusEightGroups = 0
  /// Σ (out − x)² over every element, `out` being the dequantized value in the
  /// input's dtype (as `ckpt convert` writes it): 0 for reproduced groups.
  public var sumSquaredError = 0.0
  /// The same sum for the plain rule on the groups the MSE search requantized.
  public var plainSumSquaredError = 0.0
  /// Σ (out − x)² of the MSE search on those groups (equals the above without `mse`).
  public var searchedSumSquaredError = 0.0
  /// Σ x² over every element.
  public var sumSquaredInput = 0.0
  /// Largest |out − x|.
  public var maxAbsError = 0.0

  public init() {}

  /// Elements covered.
  public func elements(groupSize: Int) -> Int { groups * groupSize }

  public static func + (a: Self, b: Self) -> Self {
    var r = a
    r.groups += b.groups
    r.recovered += b.recovered
    r.ambiguous += b.ambiguous
    r.requantized += b.requantized
    r.zeroGroups += b.zeroGroups
    r.nonFinite += b.nonFinite
    for i in 0..<16 { r.codeHistogram[i] += b.codeHistogram[i] }
    for i in 0..<9 { r.maxCodeHistogram[i] += b.maxCodeHistogram[i] }
    r.minusEightGroups += b.minusEightGroups
    r.sumSquaredError += b.sumSquaredError
    r.plainSumSquaredError += b.plainSumSquaredError
    r.searchedSumSquaredError += b.searchedSumSquaredError
    r.sumSquaredInput += b.sumSquaredInput
    r.maxAbsError = max(r.maxAbsError, b.maxAbsError)
    return r
  }

  public static func += (a: inout Self, b: Self) { a = a + b }

  /// The counts only (sums depend on summation order, which threads change).
  public var counts: [Int] {
    [groups, recovered, ambiguous, requantized, zeroGroups, nonFinite, minusEightGroups] + codeHistogram + maxCodeHistogram
  }
}

/// The result of one group (the scalar reference's unit).
public struct Int4GroupResult: Sendable, Equatable {
  public var codes: [Int8]
  /// The scale's bits in the scale dtype, zero-extended.
  public var scaleBits: UInt32
  public var outcome: Int4GroupOutcome
  /// Every exact pair's scale bits (empty when requantized).
  public var exactScales: [UInt32]
}

/// Requantizes floating-point weights to symmetric INT4 groups, recovering the
/// grid they came from where one exists (the QAT-aware part of `ckpt requantize`).
///
/// For each group of `g` consecutive inputs of a row it looks for a scale `s`
/// representable in the scale dtype and codes `q ∈ [−8, 7]` such that
/// `Int4Dequantize.element(q, s)` in the input's own dtype — exactly what
/// `ckpt convert` writes — gives back every input bit pattern. Candidates come
/// from the largest magnitude `m`: for each `k` in 1…8 (8 only when every
/// element of magnitude `m` is negative), the five scale-dtype values nearest
/// `m / k`; each element takes the valid code nearest `x / s` (ties to even).
/// That covers every pair: the element of magnitude `m` carries the largest
/// `|q|`, and at most two scale values round `k·s` to `m`. No pair: the group
/// is requantized with the rule. One pair: recovered. Several: the rule's
/// ``Int4ScaleRule/preference`` picks, then the scale nearest `m / k`, then
/// the smaller scale.
///
/// ``groupReference(bits:inputType:scaleType:options:)`` is the specification,
/// written plainly; ``matrix(input:inputType:rows:columns:groupSize:scaleType:options:packed:scales:threads:path:)``
/// runs the C kernel (BF16 scales) or the reference (other scale dtypes).
public enum Int4Requantize {
  /// Divisors tried by the MSE search: `m / d` for `d = 7 + j/16`, `j = 0…24`
  /// (from the /7 grid to `m / 8.5`, which clips the largest values).
  public static let mseDivisors: [Float] = (0...24).map { 7 + Float($0) / 16 }

  // MARK: Reference

  /// Rounds `x` to the scale dtype (nearest even) and returns the bits.
  public static func scaleBits(_ x: Float, _ t: Int4ScaleType) -> UInt32 {
    switch t {
    case .bf16: UInt32(BFloat16.encode(x))
    case .f16: UInt32(Float16Bits.encode(x))
    case .f32: x.bitPattern
    }
  }

  /// The value of scale bits.
  public static func scaleValue(_ bits: UInt32, _ t: Int4ScaleType) -> Float {
    switch t {
    case .bf16: BFloat16.decode(UInt16(truncatingIfNeeded: bits))
    case .f16: Float16Bits.decode(UInt16(truncatingIfNeeded: bits))
    case .f32: Float(bitPattern: bits)
    }
  }

  /// Decodes an input element's bits (BF16, F16 or F32) to FP32, exactly.
  public static func inputValue(_ bits: UInt32, _ t: Int4OutputType) -> Float {
    switch t {
    case .bf16: BFloat16.decode(UInt16(truncatingIfNeeded: bits))
    case .f16: Float16Bits.decode(UInt16(truncatingIfNeeded: bits))
    case .f32: Float(bitPattern: bits)
    }
  }

  /// `ckpt convert`'s output bits for code `q` and scale bits `s`.
  static func dequantized(_ q: Int, _ s: UInt32, _ scaleType: Int4ScaleType, _ inputType: Int4OutputType) -> UInt32 {
    Int4Dequantize.element(code: Int8(q), zeroPoint: 0, scaleBits: s, scaleType: scaleType, outputType: inputType).bits
  }

  /// The codes reproducing `bits` with scale `s`, or `nil`.
  static func exactCodes(_ bits: [UInt32], _ x: [Float], scale s: UInt32, _ st: Int4ScaleType, _ it: Int4OutputType) -> [Int8]? {
    let sv = Double(scaleValue(s, st))
    guard sv > 0, sv.isFinite else { return nil }
    var codes: [Int8] = []
    for (b, v) in zip(bits, x) {
      let t = Double(v) / sv
      var best: Int? = nil
      for q in -8...7 where dequantized(q, s, st, it) == b {
        if let c = best {
          let (dq, dc) = (abs(Double(q) - t), abs(Double(c) - t))
          if dq < dc || (dq == dc && q % 2 == 0) { best = q }
        } else {
          best = q
        }
      }
      guard let q = best else { return nil }
      codes.append(Int8(q))
    }
    return codes
  }

  /// Scalar reference for one group: the contract of this type.
  ///
  /// - Parameters:
  ///   - bits: The group's input bit patterns (zero-extended) in `inputType`; all finite.
  ///   - inputType: The input's dtype (and the dequantizer's output dtype).
  ///   - scaleType: The scale dtype.
  ///   - options: The rule and whether to search scales for off-grid groups.
  public static func groupReference(
    bits: [UInt32], inputType it: Int4OutputType, scaleType st: Int4ScaleType, options: Int4RequantizeOptions
  ) -> Int4GroupResult {
    let x = bits.map { inputValue($0, it) }
    let m = x.map { abs($0) }.max() ?? 0
    if m == 0, bits.allSatisfy({ inputValue($0, it).sign == .plus }) {
      return Int4GroupResult(
        codes: Array(repeating: 0, count: x.count), scaleBits: zeroGroupScale(options.rule, st), outcome: .ambiguous, exactScales: [])
    }
    var pairs: [(k: Int, s: UInt32, codes: [Int8])] = []
    if m > 0 {
      let onlyNegative = x.allSatisfy { abs($0) != m || $0 < 0 }
      for k in 1...8 where k < 8 || onlyNegative {
        let c0 = Int64(scaleBits(Float(Double(m) / Double(k)), st))
        for c in (c0 - 2)...(c0 + 2) where c > 0 {
          let s = UInt32(c)
          guard !pairs.contains(where: { $0.s == s }), let codes = exactCodes(bits, x, scale: s, st, it) else { continue }
          pairs.append((codes.map { abs(Int($0)) }.max()!, s, codes))
        }
      }
    }
    if pairs.isEmpty {
      let r = ruleQuantize(x, scaleType: st, options: options)
      return Int4GroupResult(codes: r.codes, scaleBits: r.scale, outcome: .requantized, exactScales: [])
    }
    let order = options.rule.preference
    let best = pairs.min { a, b in
      let (ra, rb) = (order.firstIndex(of: a.k)!, order.firstIndex(of: b.k)!)
      if ra != rb { return ra < rb }
      let da = abs(Double(scaleValue(a.s, st)) * Double(a.k) - Double(m))
      let db = abs(Double(scaleValue(b.s, st)) * Double(b.k) - Double(m))
      if da != db { return da < db }
      return a.s < b.s
    }!
    return Int4GroupResult(
      codes: best.codes, scaleBits: best.s, outcome: pairs.count == 1 ? .recovered : .ambiguous, exactScales: pairs.map(\.s).sorted())
  }

  /// The scale an all-zero group gets: the rule's floor.
  public static func zeroGroupScale(_ rule: Int4ScaleRule, _ st: Int4ScaleType) -> UInt32 {
    switch rule {
    case .qat7: scaleBits(1e-5, st)
    case .minmax: scaleBits(Float.ulpOfOne, st)
    }
  }

  /// The rule's scale for a group of largest magnitude `m`.
  public static func ruleScale(_ m: Float, _ rule: Int4ScaleRule, _ st: Int4ScaleType) -> UInt32 {
    switch rule {
    case .qat7: return scaleBits(max(m / 7, 1e-5), st)
    case .minmax:
      let s = scaleBits(m / 7.5, st)
      let floor = scaleBits(Float.ulpOfOne, st)
      return scaleValue(s, st) < scaleValue(floor, st) ? floor : s
    }
  }

  /// The rule's code for `x` with scale value `s`.
  public static func ruleCode(_ x: Float, _ s: Float, _ rule: Int4ScaleRule, _ st: Int4ScaleType) -> Int8 {
    switch rule {
    case .qat7:
      return Int8(min(max((x / s).rounded(.toNearestOrEven), -7), 7))
    case .minmax:
      let t = scaleValue(scaleBits(x / s, st), st)
      return Int8(min(max(t, -8), 7).rounded(.toNearestOrEven))
    }
  }

  /// Quantizes a group with the rule, or with the MSE search.
  static func ruleQuantize(_ x: [Float], scaleType st: Int4ScaleType, options: Int4RequantizeOptions) -> (codes: [Int8], scale: UInt32) {
    let m = x.map { abs($0) }.max() ?? 0
    let s = ruleScale(m, options.rule, st)
    let sv = scaleValue(s, st)
    let codes = x.map { ruleCode($0, sv, options.rule, st) }
    guard options.mse else { return (codes, s) }
    var best = (codes: codes, scale: s, error: squaredError(x, codes, sv))
    for d in mseDivisors {
      let c = scaleBits(m / d, st)
      let cv = scaleValue(c, st)
      guard cv > 0, cv.isFinite else { continue }
      let q = x.map { Int8(min(max(($0 / cv).rounded(.toNearestOrEven), -8), 7)) }
      let e = squaredError(x, q, cv)
      if e < best.error { best = (q, c, e) }
    }
    return (best.codes, best.scale)
  }

  /// Σ (q·s − x)² in Double: the MSE search's criterion.
  static func squaredError(_ x: [Float], _ q: [Int8], _ s: Float) -> Double {
    zip(x, q).reduce(0) { acc, p in
      let d = Double(p.1) * Double(s) - Double(p.0)
      return acc + d * d
    }
  }

  /// Scalar reference for a whole matrix: ``groupReference(bits:inputType:scaleType:options:)``
  /// on every group, packed as compressed-tensors packs, with statistics.
  ///
  /// - Parameters:
  ///   - input: `rows × columns` elements of `inputType`, row-major, little-endian.
  ///   - packed: `rows × ceil(columns / 8)` I32 words (``Int4Packing``).
  ///   - scales: `rows × columns / groupSize` scales of `scaleType`.
  /// - Precondition: `columns % groupSize == 0` and buffer sizes match.
  public static func matrixReference(
    input: UnsafeRawBufferPointer, inputType it: Int4OutputType, rows: Int, columns: Int, groupSize g: Int,
    scaleType st: Int4ScaleType, options: Int4RequantizeOptions, packed: UnsafeMutableRawBufferPointer,
    scales: UnsafeMutableRawBufferPointer
  ) -> Int4RequantizeStats {
    precondition(g > 0 && columns % g == 0, "columns must be a multiple of the group size")
    precondition(input.count == rows * columns * it.byteSize, "input size")
    precondition(packed.count == rows * Int4Packing.bytesPerRow(columns: columns), "packed size")
    precondition(scales.count == rows * (columns / g) * st.byteSize, "scales size")
    var stats = Int4RequantizeStats()
    var rowCodes = [Int8](repeating: 0, count: columns)
    let rowBytes = Int4Packing.bytesPerRow(columns: columns)
    for r in 0..<rows {
      for gi in 0..<(columns / g) {
        let bits: [UInt32] = (0..<g).map { j in
          let i = r * columns + gi * g + j
          switch it {
          case .f32: return input.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)
          case .bf16, .f16: return UInt32(input.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
          }
        }
        let x = bits.map { inputValue($0, it) }
        stats.groups += 1
        if x.contains(where: { !$0.isFinite }) {
          stats.nonFinite += x.filter { !$0.isFinite }.count
          stats.requantized += 1
          for j in 0..<g { rowCodes[gi * g + j] = 0 }
          store(scale: zeroGroupScale(options.rule, st), at: r * (columns / g) + gi, st, scales)
          continue
        }
        let res = groupReference(bits: bits, inputType: it, scaleType: st, options: options)
        for j in 0..<g { rowCodes[gi * g + j] = res.codes[j] }
        store(scale: res.scaleBits, at: r * (columns / g) + gi, st, scales)
        stats.sumSquaredInput += x.reduce(0) { $0 + Double($1) * Double($1) }
        switch res.outcome {
        case .recovered:
          stats.recovered += 1
          let k = res.codes.map { abs(Int($0)) }.max()!
          stats.maxCodeHistogram[k] += 1
          if res.codes.contains(-8) { stats.minusEightGroups += 1 }
        case .ambiguous:
          stats.ambiguous += 1
          if res.exactScales.isEmpty { stats.zeroGroups += 1 }
        case .requantized:
          stats.requantized += 1
          var e = 0.0
          for j in 0..<g {
            let out = inputValue(dequantized(Int(res.codes[j]), res.scaleBits, st, it), it)
            let d = Double(out) - Double(x[j])
            e += d * d
            stats.maxAbsError = max(stats.maxAbsError, abs(d))
          }
          stats.sumSquaredError += e
          if options.mse {
            let plain = ruleQuantize(x, scaleType: st, options: Int4RequantizeOptions(rule: options.rule))
            var pe = 0.0
            for j in 0..<g {
              let out = inputValue(dequantized(Int(plain.codes[j]), plain.scale, st, it), it)
              let d = Double(out) - Double(x[j])
              pe += d * d
            }
            stats.plainSumSquaredError += pe
          } else {
            stats.plainSumSquaredError += e
          }
          stats.searchedSumSquaredError += e
        }
        if res.outcome != .requantized {
          for q in res.codes { stats.codeHistogram[Int(q) + 8] += 1 }
        }
      }
      rowCodes.withUnsafeBufferPointer { c in
        Int4Packing.packRow(c, into: UnsafeMutableRawBufferPointer(rebasing: packed[(r * rowBytes)..<((r + 1) * rowBytes)]))
      }
    }
    return stats
  }

  static func store(scale: UInt32, at i: Int, _ st: Int4ScaleType, _ scales: UnsafeMutableRawBufferPointer) {
    switch st {
    case .f32: scales.storeBytes(of: scale.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
    case .bf16, .f16: scales.storeBytes(of: UInt16(truncatingIfNeeded: scale).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
    }
  }

  // MARK: Fast

  /// Requantizes a matrix: the C kernel on `threads` threads for BF16 scales
  /// (bit-identical to ``matrixReference(input:inputType:rows:columns:groupSize:scaleType:options:packed:scales:)``,
  /// statistics' sums up to summation order), the reference otherwise.
  /// Output bytes do not depend on `threads` or `path`.
  public static func matrix(
    input: UnsafeRawBufferPointer, inputType it: Int4OutputType, rows: Int, columns: Int, groupSize g: Int,
    scaleType st: Int4ScaleType, options: Int4RequantizeOptions, packed: UnsafeMutableRawBufferPointer,
    scales: UnsafeMutableRawBufferPointer, threads: Int = 1, path: KernelPath = .automatic
  ) -> Int4RequantizeStats {
    precondition(g > 0 && columns % g == 0, "columns must be a multiple of the group size")
    precondition(input.count == rows * columns * it.byteSize, "input size")
    precondition(packed.count == rows * Int4Packing.bytesPerRow(columns: columns), "packed size")
    precondition(scales.count == rows * (columns / g) * st.byteSize, "scales size")
    guard st == .bf16, g <= 256, rows > 0, columns > 0 else {
      return matrixReference(
        input: input, inputType: it, rows: rows, columns: columns, groupSize: g, scaleType: st, options: options, packed: packed,
        scales: scales)
    }
    let inType: Int32 = it == .f32 ? Int32(CK_OUT_F32) : it == .bf16 ? Int32(CK_OUT_BF16) : Int32(CK_OUT_F16)
    let rule: Int32 = options.rule == .qat7 ? 0 : 1
    let t = max(1, min(threads, rows))
    let chunk = (rows + t - 1) / t
    let parts = (rows + chunk - 1) / chunk
    let rowBytes = Int4Packing.bytesPerRow(columns: columns)
    nonisolated(unsafe) var results = [ck_requant_stats](repeating: ck_requant_stats(), count: parts)
    nonisolated(unsafe) let (inBase, pBase, sBase) = (input.baseAddress!, packed.baseAddress!, scales.baseAddress!)
    let useAVX = path.useAVX512
    results.withUnsafeMutableBufferPointer { out in
      nonisolated(unsafe) let out = out
      let work: @Sendable (Int) -> Void = { p in
        let r0 = p * chunk
        let r1 = min(rows, r0 + chunk)
        ck_int4_requantize_rows(
          inBase + r0 * columns * it.byteSize, inType, r1 - r0, columns, g, rule, options.mse ? 1 : 0,
          pBase + r0 * rowBytes, sBase + r0 * (columns / g) * 2, useAVX ? 1 : 0, &out[p])
      }
      if parts == 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: work) }
    }
    var total = Int4RequantizeStats()
    for r in results { total += Int4RequantizeStats(r) }
    return total
  }
}

extension Int4RequantizeStats {
  init(_ c: ck_requant_stats) {
    self.init()
    groups = Int(c.groups)
    recovered = Int(c.recovered)
    ambiguous = Int(c.ambiguous)
    requantized = Int(c.requantized)
    zeroGroups = Int(c.zero_groups)
    nonFinite = Int(c.non_finite)
    withUnsafeBytes(of: c.code_hist) { b in for i in 0..<16 { codeHistogram[i] = Int(b.load(fromByteOffset: 8 * i, as: UInt64.self)) } }
    withUnsafeBytes(of: c.maxq_hist) { b in for i in 0..<9 { maxCodeHistogram[i] = Int(b.load(fromByteOffset: 8 * i, as: UInt64.self)) } }
    minusEightGroups = Int(c.minus8_groups)
    sumSquaredError = c.sse
    plainSumSquaredError = c.plain_sse
    searchedSumSquaredError = c.searched_sse
    sumSquaredInput = c.ssq_input
    maxAbsError = c.max_abs
  }
}
