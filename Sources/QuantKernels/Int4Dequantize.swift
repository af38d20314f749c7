import CQuantKernels
import Dispatch

// INT4 (compressed-tensors `pack-quantized`) dequantization to FP32, BF16 and FP16.
// Contracts are in the doc comments of `Int4Dequantize`; the source of truth for the
// library's behaviour is docs/FORMATS.md §2.3 and §6.

/// The dtype of an INT4 tensor's `weight_scale`.
public enum Int4ScaleType: Sendable, CaseIterable, Equatable {
  /// bfloat16 scales (Kimi K2).
  case bf16
  /// IEEE binary16 scales.
  case f16
  /// IEEE binary32 scales.
  case f32

  /// Bytes per scale.
  public var byteSize: Int { self == .f32 ? 4 : 2 }
}

/// The element type an INT4 dequantization writes.
public enum Int4OutputType: Sendable, CaseIterable, Equatable {
  /// IEEE binary32, little-endian.
  case f32
  /// bfloat16 bit patterns, little-endian.
  case bf16
  /// IEEE binary16 bit patterns, little-endian.
  case f16

  /// Bytes per output element.
  public var byteSize: Int { self == .f32 ? 4 : 2 }
}

/// What a dequantization lost, counted per element.
public struct Int4DequantizeCounts: Sendable, Equatable, CustomStringConvertible {
  /// Elements with a finite scale whose output value differs from the real
  /// product `(q − zp)·s`: rounding, underflow, and overflow to ±inf.
  public var inexact: Int
  /// Elements whose output is NaN or ±inf, for any reason (a non-finite scale,
  /// or overflow).
  public var nonFinite: Int

  /// Creates counts.
  public init(inexact: Int = 0, nonFinite: Int = 0) {
    self.inexact = inexact
    self.nonFinite = nonFinite
  }

  /// The element-wise sum.
  public static func + (a: Self, b: Self) -> Self {
    Self(inexact: a.inexact + b.inexact, nonFinite: a.nonFinite + b.nonFinite)
  }

  /// Adds `b` to `a`.
  public static func += (a: inout Self, b: Self) { a = a + b }

  public var description: String { "inexact \(inexact), non-finite \(nonFinite)" }
}

/// How the scales of an INT4 weight are laid out (compressed-tensors `strategy`).
public enum Int4Strategy: Sendable, Equatable, Hashable {
  /// One scale per `size` consecutive inputs of a row (`weight_scale` is
  /// `[rows, ceil(columns / size)]`), or per `g_idx` group.
  case group(size: Int)
  /// One scale per row (`weight_scale` is `[rows, 1]`).
  case channel
  /// One scale for the whole tensor (`weight_scale` is `[1]` or a scalar).
  case tensor
}

// MARK: - Layout validation (never traps)

/// Why an INT4 layout is not usable. Thrown by ``Int4Layout``; never a trap.
public enum Int4LayoutError: Error, Equatable, Sendable, CustomStringConvertible {
  /// `weight_shape` is not two non-negative dimensions.
  case invalidWeightShape(shape: [Int])
  /// The group size is not positive.
  case invalidGroupSize(groupSize: Int)
  /// `columns >= groupSize` but not a multiple of it (compressed-tensors rejects this).
  case columnsNotDivisibleByGroupSize(columns: Int, groupSize: Int)
  /// `weight_packed` does not have the shape `weight_shape` implies.
  case packedShapeMismatch(expected: [Int], actual: [Int])
  /// `weight_scale` does not have the shape the strategy implies.
  case scaleShapeMismatch(expected: [Int], actual: [Int])
  /// `weight_zero_point` does not have the packed shape the scales imply.
  case zeroPointShapeMismatch(expected: [Int], actual: [Int])
  /// `weight_g_idx` is not `[columns]`.
  case groupIndexShapeMismatch(expected: [Int], actual: [Int])
  /// Asymmetric tensor-strategy zero points are not packed by compressed-tensors 0.12.2
  /// and are not supported.
  case zeroPointsNeedGroupOrChannel
  /// `g_idx` is only meaningful with the group strategy.
  case groupIndexNeedsGroupStrategy
  /// A `g_idx` value is outside `[0, groups)` (and is not the library's −1 marker).
  case groupIndexOutOfRange(column: Int, value: Int32, groups: Int)
  /// A `g_idx` group does not hold exactly `expected` columns, which the library
  /// silently assumes when it reshapes the sorted columns.
  case groupIndexGroupSize(group: Int, count: Int, expected: Int)
  /// A byte count does not fit in `Int`.
  case tooLarge(shape: [Int])

  public var description: String {
    switch self {
    case .invalidWeightShape(let s): "weight_shape \(s) is not two non-negative dimensions"
    case .invalidGroupSize(let g): "group size \(g) is not positive"
    case .columnsNotDivisibleByGroupSize(let c, let g): "\(c) input columns are not a multiple of the group size \(g)"
    case .packedShapeMismatch(let e, let a): "weight_packed has shape \(a), expected \(e)"
    case .scaleShapeMismatch(let e, let a): "weight_scale has shape \(a), expected \(e)"
    case .zeroPointShapeMismatch(let e, let a): "weight_zero_point has shape \(a), expected \(e)"
    case .groupIndexShapeMismatch(let e, let a): "weight_g_idx has shape \(a), expected \(e)"
    case .zeroPointsNeedGroupOrChannel: "zero points are only supported with the group or channel strategy"
    case .groupIndexNeedsGroupStrategy: "weight_g_idx is only supported with the group strategy"
    case .groupIndexOutOfRange(let c, let v, let g): "weight_g_idx[\(c)] = \(v) is outside [0, \(g))"
    case .groupIndexGroupSize(let g, let n, let e): "weight_g_idx group \(g) has \(n) columns, expected \(e)"
    case .tooLarge(let s): "shape \(s) is too large"
    }
  }
}

/// A validated INT4 weight layout: shapes of every tensor, derived once from
/// untrusted metadata, so that kernel preconditions cannot fail afterwards.
///
/// Construction **throws** ``Int4LayoutError`` and never traps. Pass the layout to
/// ``Int4Dequantize/matrix(_:packed:scales:zeroPoints:groupIndex:output:outputType:threads:)``
/// with buffers of the byte counts given here.
public struct Int4Layout: Sendable, Equatable {
  /// Output features (`weight_shape[0]`).
  public let rows: Int
  /// Input features (`weight_shape[1]`).
  public let columns: Int
  /// The scale strategy.
  public let strategy: Int4Strategy
  /// The scale dtype.
  public let scaleType: Int4ScaleType
  /// Whether packed asymmetric zero points are present.
  public let hasZeroPoints: Bool
  /// Whether a `g_idx` tensor is present.
  public let hasGroupIndex: Bool

  /// Validates a layout given as dimensions.
  ///
  /// - Throws: ``Int4LayoutError`` for negative dimensions, a non-positive group
  ///   size, `columns >= size` with `columns % size != 0`, zero points with the
  ///   tensor strategy, `g_idx` without the group strategy, or byte counts that
  ///   overflow `Int`.
  public init(
    rows: Int, columns: Int, strategy: Int4Strategy, scaleType: Int4ScaleType,
    hasZeroPoints: Bool = false, hasGroupIndex: Bool = false
  ) throws(Int4LayoutError) {
    guard rows >= 0, columns >= 0 else { throw .invalidWeightShape(shape: [rows, columns]) }
    if case .group(let size) = strategy {
      guard size > 0 else { throw .invalidGroupSize(groupSize: size) }
      // Same rule as compressed-tensors 0.12.2 `_process_quantization`.
      if columns >= size, columns % size != 0 {
        throw .columnsNotDivisibleByGroupSize(columns: columns, groupSize: size)
      }
    } else if hasGroupIndex {
      throw .groupIndexNeedsGroupStrategy
    }
    if hasZeroPoints, strategy == .tensor { throw .zeroPointsNeedGroupOrChannel }
    self.rows = rows
    self.columns = columns
    self.strategy = strategy
    self.scaleType = scaleType
    self.hasZeroPoints = hasZeroPoints
    self.hasGroupIndex = hasGroupIndex
    // The largest byte count is the FP32 output, rows · columns · 4.
    let (cells, o1) = rows.multipliedReportingOverflow(by: max(columns, 1))
    let (bytes, o2) = cells.multipliedReportingOverflow(by: 8)
    guard !o1, !o2, bytes < Int.max / 2 else { throw .tooLarge(shape: [rows, columns]) }
  }

  /// Validates the shapes of the tensors of one quantized Linear as read from a file.
  ///
  /// - Parameters:
  ///   - weightShape: The values of `weight_shape` (`[out, in]`).
  ///   - strategy: From the quantization config.
  ///   - scaleType: The dtype of `weight_scale`.
  ///   - packedShape: The shape of `weight_packed`; must be `[out, ceil(in / 8)]`.
  ///   - scaleShape: The shape of `weight_scale`: `[out, groups]` (group),
  ///     `[out, 1]` (channel), `[1]` or `[]` (tensor).
  ///   - zeroPointShape: The shape of `weight_zero_point` if present:
  ///     `[ceil(out / 8), groups]` (packed along dimension 0).
  ///   - groupIndexShape: The shape of `weight_g_idx` if present: `[in]`.
  /// - Throws: ``Int4LayoutError`` naming the first mismatch.
  public init(
    weightShape: [Int], strategy: Int4Strategy, scaleType: Int4ScaleType,
    packedShape: [Int], scaleShape: [Int], zeroPointShape: [Int]? = nil, groupIndexShape: [Int]? = nil
  ) throws(Int4LayoutError) {
    guard weightShape.count == 2, weightShape[0] >= 0, weightShape[1] >= 0 else {
      throw .invalidWeightShape(shape: weightShape)
    }
    try self.init(
      rows: weightShape[0], columns: weightShape[1], strategy: strategy, scaleType: scaleType,
      hasZeroPoints: zeroPointShape != nil, hasGroupIndex: groupIndexShape != nil)
    guard packedShape == self.packedShape else {
      throw .packedShapeMismatch(expected: self.packedShape, actual: packedShape)
    }
    let scaleOK = strategy == .tensor ? (scaleShape == [1] || scaleShape == []) : scaleShape == self.scaleShape
    guard scaleOK else { throw .scaleShapeMismatch(expected: self.scaleShape, actual: scaleShape) }
    if let z = zeroPointShape, z != self.zeroPointShape {
      throw .zeroPointShapeMismatch(expected: self.zeroPointShape, actual: z)
    }
    if let g = groupIndexShape, g != [columns] {
      throw .groupIndexShapeMismatch(expected: [columns], actual: g)
    }
  }

  /// Columns sharing one scale in column order: the group size, or `columns`
  /// for channel and tensor (at least 1).
  public var groupSize: Int {
    switch strategy {
    case .group(let size): size
    case .channel, .tensor: max(columns, 1)
    }
  }

  /// Scales per row: `ceil(columns / size)` for group, 1 otherwise.
  public var groupsPerRow: Int {
    switch strategy {
    case .group(let size): (columns + size - 1) / size
    case .channel, .tensor: 1
    }
  }

  /// Rows of scales: `rows`, or 1 for the tensor strategy.
  public var scaleRows: Int { strategy == .tensor ? 1 : rows }

  /// `weight_packed` shape: `[rows, ceil(columns / 8)]`.
  public var packedShape: [Int] { [rows, Int4Packing.wordsPerRow(columns: columns)] }
  /// Canonical `weight_scale` shape: `[rows, groups]`, `[rows, 1]`, or `[1]` for tensor.
  public var scaleShape: [Int] { strategy == .tensor ? [1] : [rows, groupsPerRow] }
  /// `weight_zero_point` shape, packed along dimension 0: `[ceil(rows / 8), groups]`.
  public var zeroPointShape: [Int] { [Int4Packing.wordsPerRow(columns: scaleRows), groupsPerRow] }

  /// Bytes of `weight_packed`.
  public var packedByteCount: Int { rows * Int4Packing.bytesPerRow(columns: columns) }
  /// Bytes of `weight_scale`.
  public var scaleByteCount: Int { scaleRows * groupsPerRow * scaleType.byteSize }
  /// Bytes of the packed `weight_zero_point` (0 when absent).
  public var zeroPointByteCount: Int { hasZeroPoints ? 4 * zeroPointShape[0] * zeroPointShape[1] : 0 }
  /// Elements of `weight_g_idx` (0 when absent).
  public var groupIndexCount: Int { hasGroupIndex ? columns : 0 }
  /// Bytes of the dequantized `[rows, columns]` output.
  public func outputByteCount(_ type: Int4OutputType) -> Int { rows * columns * type.byteSize }

  /// Decodes and validates `weight_g_idx` (little-endian Int32, any alignment).
  ///
  /// Follows compressed-tensors 0.12.2: a `g_idx` containing −1 is an
  /// uninitialized one and means column order, so this returns `nil`. Otherwise
  /// every value must be in `[0, groupsPerRow)` and every group must hold exactly
  /// `min(groupSize, columns)` columns, because the library sorts the columns by
  /// `g_idx` and cuts them into runs of the group size.
  ///
  /// - Returns: The indices to pass to the kernels, or `nil` for column order.
  /// - Throws: ``Int4LayoutError`` for a wrong byte count (as a shape mismatch),
  ///   an out-of-range value or a wrong group population.
  public func groupIndex(from raw: UnsafeRawBufferPointer) throws(Int4LayoutError) -> [Int32]? {
    guard hasGroupIndex else { throw .groupIndexNeedsGroupStrategy }
    guard raw.count == 4 * columns else { throw .groupIndexShapeMismatch(expected: [columns], actual: [raw.count / 4]) }
    let values = (0..<columns).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
    if values.contains(-1) { return nil }
    let groups = groupsPerRow
    var population = [Int](repeating: 0, count: groups)
    for (c, v) in values.enumerated() {
      guard v >= 0, Int(v) < groups else { throw .groupIndexOutOfRange(column: c, value: v, groups: groups) }
      population[Int(v)] += 1
    }
    let expected = min(groupSize, columns)
    if let g = population.firstIndex(where: { $0 != expected }) {
      throw .groupIndexGroupSize(group: g, count: population[g], expected: expected)
    }
    return values
  }
}

// MARK: - Kernels

/// INT4 → FP32 / BF16 / FP16 dequantization of compressed-tensors `pack-quantized`
/// weights (docs/FORMATS.md §2.3).
///
/// ## Contract
///
/// Let `q` be the code of an element (``Int4Packing``), `zp` its zero point (0 when
/// symmetric, otherwise in `[−8, 7]`), `s` its scale decoded exactly to `Float`, and
/// `p = Float(q − zp) · s`, one IEEE binary32 multiplication. For BF16 and FP16
/// scales `p` is the exact real product whenever it is finite (a 4-bit integer
/// times an 8- or 11-bit significand). The library computes `(q − zp) · s` in the
/// *scale* dtype; the outputs are:
///
/// | Output | BF16 scales | FP16 scales | FP32 scales |
/// |---|---|---|---|
/// | ``Int4OutputType/f32`` | `p` (exact) | `p` (exact) | `p` (one FP32 rounding = library) |
/// | ``Int4OutputType/bf16`` | `bf16_RNE(p)` = library | `bf16_RNE(f16_RNE(p))` = library's FP16 result, then RNE | `bf16_RNE(p)` |
/// | ``Int4OutputType/f16`` | `f16_RNE(p)`: exact unless out of FP16 range | `f16_RNE(p)` = library | `f16_RNE(p)` |
///
/// RNE is round to nearest, ties to even, with IEEE overflow to ±inf (no saturation)
/// and gradual underflow.
///
/// **Non-finite scales** never trap: a NaN scale, or an infinite scale times
/// `q − zp = 0`, gives NaN, written as the canonical code of the output format
/// (FP32 `0x7FC00000`, BF16 ``BFloat16/nanCode`` (`0x7FC0`, the policy of Docs/NUMERICS.md), FP16
/// `0x7E00`); an infinite scale otherwise gives ±inf.
///
/// **Counts** (``Int4DequantizeCounts``): `inexact` counts elements with a finite
/// scale whose output value differs from the real `(q − zp)·s` (so for BF16 output
/// with BF16 scales, the elements the BF16 target cannot hold; for FP16 output,
/// underflow and overflow); `nonFinite` counts NaN and ±inf outputs.
///
/// **Scale mapping.** Element `c` of a row uses scale `groupIndex[c]` when a
/// `g_idx` is given, else `c / groupSize`. Channel and tensor strategies are
/// one group of `groupSize = columns` per row.
///
/// **Buffers** are raw little-endian bytes of any alignment; outputs are
/// caller-provided and fully written. Every kernel **traps** (`precondition`) on
/// a buffer of the wrong size, a scale index out of range or a zero point outside
/// `[−8, 7]`: these are programmer errors; validate untrusted shapes with
/// ``Int4Layout`` first.
///
/// ## Fast paths
///
/// ``row(packed:columns:scales:scaleType:zeroPoints:groupSize:groupIndex:output:outputType:)``
/// vectorizes runs of elements that share a scale (32 elements per step) for FP32
/// and FP16 outputs with BF16 or FP16 scales and BF16 output with BF16 scales, when
/// the scale is finite and `|s| < 2¹²⁴` (FP16 output: also `|s| ≥ 2⁻¹⁴` and
/// `max|q − zp|·|s| ≤ 65504`, so every nonzero product is an FP16 normal). Group
/// sizes that are multiples of 32 run as one loop over the row's groups. Everything
/// else (FP32 scales, BF16 output with FP16 scales, out-of-range or non-finite
/// scales, run heads and tails off the 32-element grid, `g_idx` runs shorter than 32)
/// takes the scalar element function, so results are identical to
/// ``rowReference(packed:columns:scales:scaleType:zeroPoints:groupSize:groupIndex:output:outputType:)``
/// bit for bit, and so are the counts.
public enum Int4Dequantize {
  /// Scalar reference for one element: the contract of this type, written plainly.
  ///
  /// - Parameters:
  ///   - code: `q ∈ [−8, 7]`.
  ///   - zeroPoint: `zp ∈ [−8, 7]` (0 when symmetric).
  ///   - scaleBits: The raw scale bits, zero-extended.
  ///   - scaleType: The scale dtype.
  ///   - outputType: The output format.
  /// - Returns: The output bits (zero-extended), and whether the element is
  ///   inexact and non-finite as ``Int4DequantizeCounts`` defines them.
  public static func element(
    code: Int8, zeroPoint: Int8, scaleBits: UInt32, scaleType: Int4ScaleType, outputType: Int4OutputType
  ) -> (bits: UInt32, inexact: Bool, nonFinite: Bool) {
    let a = Int(code) - Int(zeroPoint)
    let s: Float =
      switch scaleType {
      case .bf16: Float(bitPattern: scaleBits << 16)
      case .f16: Float16Bits.decode(UInt16(truncatingIfNeeded: scaleBits))
      case .f32: Float(bitPattern: scaleBits)
      }
    var p = Float(a) * s
    if p.isNaN { p = Float(bitPattern: 0x7FC0_0000) }
    let value: Float
    let bits: UInt32
    switch outputType {
    case .f32:
      bits = p.bitPattern
      value = p
    case .bf16:
      let b = scaleType == .f16 ? BFloat16.encode(Float16Bits.decode(Float16Bits.encode(p))) : BFloat16.encode(p)
      bits = UInt32(b)
      value = Float(bitPattern: bits << 16)
    case .f16:
      let h = Float16Bits.encode(p)
      bits = UInt32(h)
      value = Float16Bits.decode(h)
    }
    // Double holds (q − zp)·s exactly: at most 4 + 24 significant bits, no overflow.
    let inexact = s.isFinite && Double(value) != Double(a) * Double(s)
    return (bits, inexact, !value.isFinite)
  }

  /// Scalar reference for one row; the specification of
  /// ``row(packed:columns:scales:scaleType:zeroPoints:groupSize:groupIndex:output:outputType:)``.
  ///
  /// Applies ``element(code:zeroPoint:scaleBits:scaleType:outputType:)`` to each
  /// element in order.
  ///
  /// - Parameters: See ``row(packed:columns:scales:scaleType:zeroPoints:groupSize:groupIndex:output:outputType:)``.
  /// - Returns: The counts of inexact and non-finite outputs.
  public static func rowReference(
    packed: UnsafeRawBufferPointer, columns: Int,
    scales: UnsafeRawBufferPointer, scaleType: Int4ScaleType,
    zeroPoints: UnsafeBufferPointer<Int8>?, groupSize: Int, groupIndex: UnsafeBufferPointer<Int32>?,
    output: UnsafeMutableRawBufferPointer, outputType: Int4OutputType
  ) -> Int4DequantizeCounts {
    let groups = checkRow(
      packed: packed, columns: columns, scales: scales, scaleType: scaleType, zeroPoints: zeroPoints,
      groupSize: groupSize, groupIndex: groupIndex, output: output, outputType: outputType)
    var counts = Int4DequantizeCounts()
    for c in 0..<columns {
      let g = groupIndex.map { Int($0[c]) } ?? c / groupSize
      precondition(g >= 0 && g < groups, "g_idx value out of range")
      let q = nibble(packed.baseAddress!, c)
      let zp = zeroPoints?[g] ?? 0
      let e = element(
        code: Int8(q) - 8, zeroPoint: zp, scaleBits: scaleBits(scales.baseAddress!, g, scaleType),
        scaleType: scaleType, outputType: outputType)
      store(e.bits, output.baseAddress!, c, outputType)
      counts.inexact += e.inexact ? 1 : 0
      counts.nonFinite += e.nonFinite ? 1 : 0
    }
    return counts
  }

  /// Dequantizes one row of a `pack-quantized` INT4 weight (fast path).
  ///
  /// Bit-identical to ``rowReference(packed:columns:scales:scaleType:zeroPoints:groupSize:groupIndex:output:outputType:)``,
  /// including the counts; see ``Int4Dequantize`` for the contract.
  ///
  /// - Parameters:
  ///   - packed: The row's packed words: exactly `4 · ceil(columns / 8)` bytes.
  ///   - columns: Elements in the row.
  ///   - scales: This row's scales (little-endian, `scaleType`): exactly `groups`
  ///     of them, where `groups = ceil(columns / groupSize)` without `g_idx`; with
  ///     `g_idx`, `groups` is `scales.count / scaleType.byteSize`.
  ///   - scaleType: The scale dtype.
  ///   - zeroPoints: This row's unpacked zero points, one per group, in `[−8, 7]`,
  ///     or `nil` when symmetric.
  ///   - groupSize: Columns per scale in column order (`columns` for channel and
  ///     tensor); at least 1.
  ///   - groupIndex: `g_idx`, `columns` values in `[0, groups)`, or `nil`.
  ///   - output: Exactly `columns · outputType.byteSize` bytes.
  ///   - outputType: The output format.
  ///   - path: Portable Swift or AVX-512 (``KernelPath``); results are identical.
  /// - Returns: The counts of inexact and non-finite outputs.
  /// - Precondition: Every size above holds, every zero point is in `[−8, 7]` and
  ///   every `g_idx` value in range; traps otherwise.
  public static func row(
    packed: UnsafeRawBufferPointer, columns: Int,
    scales: UnsafeRawBufferPointer, scaleType: Int4ScaleType,
    zeroPoints: UnsafeBufferPointer<Int8>?, groupSize: Int, groupIndex: UnsafeBufferPointer<Int32>?,
    output: UnsafeMutableRawBufferPointer, outputType: Int4OutputType, path: KernelPath = .automatic
  ) -> Int4DequantizeCounts {
    let groups = checkRow(
      packed: packed, columns: columns, scales: scales, scaleType: scaleType, zeroPoints: zeroPoints,
      groupSize: groupSize, groupIndex: groupIndex, output: output, outputType: outputType)
    guard columns > 0 else { return Int4DequantizeCounts() }
    let src = packed.baseAddress!
    let sc = scales.baseAddress!
    let dst = output.baseAddress!
    var counts = Int4DequantizeCounts()
    if let gIdx = groupIndex {
      // Runs of equal g_idx share a scale.
      var c0 = 0
      while c0 < columns {
        let g = Int(gIdx[c0])
        precondition(g >= 0 && g < groups, "g_idx value out of range")
        var c1 = c0 + 1
        while c1 < columns && Int(gIdx[c1]) == g { c1 += 1 }
        counts += span(src, c0, c1, scaleBits(sc, g, scaleType), scaleType, zeroPoints?[g] ?? 0, dst, outputType)
        c0 = c1
      }
    } else {
      var g0 = 0
      if groupSize % 32 == 0 && vectorizes(scaleType, outputType) {
        // Whole groups in one loop: no call per group.
        g0 = columns / groupSize
        if scaleType == .bf16 && path.useAVX512 {
          counts = avx512Groups(
            src, dst, groups: g0, chunks: groupSize / 32, scales: sc, zeroPoints: zeroPoints?.baseAddress,
            outputType: outputType)
        } else {
          counts = Vector.groups(
            src, dst, groups: g0, chunks: groupSize / 32, scales: sc, scaleType: scaleType,
            zeroPoints: zeroPoints?.baseAddress, outputType: outputType)
        }
      }
      for g in g0..<groups {
        let c0 = g * groupSize
        let c1 = min(columns, c0 + groupSize)
        counts += span(src, c0, c1, scaleBits(sc, g, scaleType), scaleType, zeroPoints?[g] ?? 0, dst, outputType)
      }
    }
    return counts
  }

  /// Dequantizes a whole `[rows, columns]` weight with the fast row kernel,
  /// splitting rows across `threads` threads (`DispatchQueue.concurrentPerform`).
  ///
  /// Row `r` uses scale row `r` (row 0 for the tensor strategy) and zero points
  /// unpacked on the fly from `zeroPoints`, packed along dimension 0
  /// (``Int4Packing/unpackZeroPoint(_:row:group:groups:)``). Results and counts
  /// do not depend on `threads`. Nothing is allocated per row: each thread has one
  /// scratch buffer of `groupsPerRow` zero points (stack-allocated when small).
  ///
  /// - Parameters:
  ///   - layout: A validated layout.
  ///   - packed: `weight_packed`, ``Int4Layout/packedByteCount`` bytes.
  ///   - scales: `weight_scale`, ``Int4Layout/scaleByteCount`` bytes.
  ///   - zeroPoints: Packed `weight_zero_point` (``Int4Layout/zeroPointByteCount``
  ///     bytes) when ``Int4Layout/hasZeroPoints``, else `nil`.
  ///   - groupIndex: From ``Int4Layout/groupIndex(from:)``, or `nil` (column order).
  ///   - output: ``Int4Layout/outputByteCount(_:)`` bytes, row-major.
  ///   - outputType: The output format.
  ///   - threads: Threads to use (at least 1).
  ///   - path: Portable Swift or AVX-512 (``KernelPath``); results are identical.
  /// - Returns: The summed counts.
  /// - Precondition: Every buffer has the size the layout gives, `groupIndex` is
  ///   `nil` or has `columns` in-range values, every unpacked zero point is a valid
  ///   code (always true for 4-bit nibbles), `threads >= 1`; traps otherwise.
  public static func matrix(
    _ layout: Int4Layout, packed: UnsafeRawBufferPointer, scales: UnsafeRawBufferPointer,
    zeroPoints: UnsafeRawBufferPointer?, groupIndex: UnsafeBufferPointer<Int32>?,
    output: UnsafeMutableRawBufferPointer, outputType: Int4OutputType, threads: Int = 1,
    path: KernelPath = .automatic
  ) -> Int4DequantizeCounts {
    matrixImpl(
      layout, packed: packed, scales: scales, zeroPoints: zeroPoints, groupIndex: groupIndex,
      output: output, outputType: outputType, threads: threads, reference: false, path: path)
  }

  /// Scalar, single-threaded reference of
  /// ``matrix(_:packed:scales:zeroPoints:groupIndex:output:outputType:threads:)``:
  /// ``rowReference(packed:columns:scales:scaleType:zeroPoints:groupSize:groupIndex:output:outputType:)``
  /// on every row.
  public static func matrixReference(
    _ layout: Int4Layout, packed: UnsafeRawBufferPointer, scales: UnsafeRawBufferPointer,
    zeroPoints: UnsafeRawBufferPointer?, groupIndex: UnsafeBufferPointer<Int32>?,
    output: UnsafeMutableRawBufferPointer, outputType: Int4OutputType
  ) -> Int4DequantizeCounts {
    matrixImpl(
      layout, packed: packed, scales: scales, zeroPoints: zeroPoints, groupIndex: groupIndex,
      output: output, outputType: outputType, threads: 1, reference: true, path: .portable)
  }

  // MARK: Internals

  /// Buffers handed to worker threads; each thread touches disjoint output rows.
  private struct Job: @unchecked Sendable {
    let layout: Int4Layout
    let packed: UnsafeRawBufferPointer
    let scales: UnsafeRawBufferPointer
    let zeroPoints: UnsafeRawBufferPointer?
    let groupIndex: UnsafeBufferPointer<Int32>?
    let output: UnsafeMutableRawBufferPointer
    let outputType: Int4OutputType
    let reference: Bool
    let path: KernelPath
    let counts: UnsafeMutablePointer<Int4DequantizeCounts>

    func run(rows: Range<Int>, slot: Int) {
      let l = layout
      let packedRow = Int4Packing.bytesPerRow(columns: l.columns)
      let groups = l.groupsPerRow
      let scaleRow = groups * l.scaleType.byteSize
      let outRow = l.columns * outputType.byteSize
      var total = Int4DequantizeCounts()
      withUnsafeTemporaryAllocation(of: Int8.self, capacity: max(groups, 1)) { zpBuffer in
        let zps = UnsafeMutableBufferPointer(rebasing: zpBuffer[0..<groups])
        for r in rows {
          var zpView: UnsafeBufferPointer<Int8>? = nil
          if let z = zeroPoints {
            for g in 0..<groups { zps[g] = Int4Packing.unpackZeroPoint(z, row: r, group: g, groups: groups) }
            zpView = UnsafeBufferPointer(zps)
          }
          let sr = l.strategy == .tensor ? 0 : r
          let p = UnsafeRawBufferPointer(rebasing: packed[(r * packedRow)..<((r + 1) * packedRow)])
          let s = UnsafeRawBufferPointer(rebasing: scales[(sr * scaleRow)..<((sr + 1) * scaleRow)])
          let o = UnsafeMutableRawBufferPointer(rebasing: output[(r * outRow)..<((r + 1) * outRow)])
          total +=
            reference
            ? rowReference(
              packed: p, columns: l.columns, scales: s, scaleType: l.scaleType, zeroPoints: zpView,
              groupSize: l.groupSize, groupIndex: groupIndex, output: o, outputType: outputType)
            : row(
              packed: p, columns: l.columns, scales: s, scaleType: l.scaleType, zeroPoints: zpView,
              groupSize: l.groupSize, groupIndex: groupIndex, output: o, outputType: outputType, path: path)
        }
      }
      counts[slot] = total
    }
  }

  private static func matrixImpl(
    _ layout: Int4Layout, packed: UnsafeRawBufferPointer, scales: UnsafeRawBufferPointer,
    zeroPoints: UnsafeRawBufferPointer?, groupIndex: UnsafeBufferPointer<Int32>?,
    output: UnsafeMutableRawBufferPointer, outputType: Int4OutputType, threads: Int, reference: Bool,
    path: KernelPath
  ) -> Int4DequantizeCounts {
    precondition(threads >= 1, "threads must be at least 1")
    precondition(packed.count == layout.packedByteCount, "weight_packed buffer has the wrong size")
    precondition(scales.count == layout.scaleByteCount, "weight_scale buffer has the wrong size")
    precondition((zeroPoints != nil) == layout.hasZeroPoints, "zero points given without the layout saying so, or missing")
    precondition(zeroPoints.map { $0.count == layout.zeroPointByteCount } ?? true, "weight_zero_point buffer has the wrong size")
    precondition(groupIndex == nil || layout.hasGroupIndex, "g_idx given for a layout without one")
    precondition(groupIndex.map { $0.count == layout.columns } ?? true, "g_idx has the wrong size")
    precondition(output.count == layout.outputByteCount(outputType), "output buffer has the wrong size")
    let rows = layout.rows
    guard rows > 0 && layout.columns > 0 else { return Int4DequantizeCounts() }
    let workers = max(1, min(threads, rows))
    return withUnsafeTemporaryAllocation(of: Int4DequantizeCounts.self, capacity: workers) { slots in
      let job = Job(
        layout: layout, packed: packed, scales: scales, zeroPoints: zeroPoints, groupIndex: groupIndex,
        output: output, outputType: outputType, reference: reference, path: path, counts: slots.baseAddress!)
      if workers == 1 {
        job.run(rows: 0..<rows, slot: 0)
      } else {
        DispatchQueue.concurrentPerform(iterations: workers) { w in
          job.run(rows: (rows * w / workers)..<(rows * (w + 1) / workers), slot: w)
        }
      }
      var total = Int4DequantizeCounts()
      for w in 0..<workers { total += slots[w] }
      return total
    }
  }

  /// Checks a row's buffers; returns the number of scales.
  @inline(__always)
  private static func checkRow(
    packed: UnsafeRawBufferPointer, columns: Int,
    scales: UnsafeRawBufferPointer, scaleType: Int4ScaleType,
    zeroPoints: UnsafeBufferPointer<Int8>?, groupSize: Int, groupIndex: UnsafeBufferPointer<Int32>?,
    output: UnsafeMutableRawBufferPointer, outputType: Int4OutputType
  ) -> Int {
    precondition(columns >= 0, "negative column count")
    precondition(groupSize >= 1, "group size must be at least 1")
    precondition(packed.count == Int4Packing.bytesPerRow(columns: columns), "packed row buffer has the wrong size")
    precondition(output.count == columns * outputType.byteSize, "output buffer has the wrong size")
    precondition(scales.count % scaleType.byteSize == 0, "scale buffer is not a whole number of scales")
    let groups = scales.count / scaleType.byteSize
    if let g = groupIndex {
      precondition(g.count == columns, "g_idx has the wrong size")
    } else {
      precondition(groups == (columns + groupSize - 1) / groupSize, "scale count does not match ceil(columns / groupSize)")
    }
    if let z = zeroPoints {
      precondition(z.count == groups, "zero point count does not match the scale count")
      for v in z { precondition(v >= -8 && v <= 7, "zero point outside [-8, 7]") }
    }
    return groups
  }

  @inline(__always)
  private static func nibble(_ src: UnsafeRawPointer, _ c: Int) -> UInt8 {
    (src.load(fromByteOffset: c >> 1, as: UInt8.self) >> UInt8(4 * (c & 1))) & 0xF
  }

  @inline(__always)
  private static func scaleBits(_ sc: UnsafeRawPointer, _ g: Int, _ t: Int4ScaleType) -> UInt32 {
    switch t {
    case .bf16, .f16: UInt32(UInt16(littleEndian: sc.loadUnaligned(fromByteOffset: 2 * g, as: UInt16.self)))
    case .f32: UInt32(littleEndian: sc.loadUnaligned(fromByteOffset: 4 * g, as: UInt32.self))
    }
  }

  @inline(__always)
  private static func store(_ bits: UInt32, _ dst: UnsafeMutableRawPointer, _ c: Int, _ t: Int4OutputType) {
    switch t {
    case .f32: dst.storeBytes(of: bits.littleEndian, toByteOffset: 4 * c, as: UInt32.self)
    case .bf16, .f16: dst.storeBytes(of: UInt16(truncatingIfNeeded: bits).littleEndian, toByteOffset: 2 * c, as: UInt16.self)
    }
  }

  /// Whether the vector kernels handle this scale dtype and output at all.
  @inline(__always)
  private static func vectorizes(_ scaleType: Int4ScaleType, _ outputType: Int4OutputType) -> Bool {
    scaleType == .bf16 || (scaleType == .f16 && outputType != .bf16)
  }

  /// The scale as a `Float` when the vector kernels may use it for this output
  /// and zero point, `nil` otherwise (and always for FP32 scales).
  ///
  /// * FP32 and BF16 outputs: `s` finite with `|s| < 2^124`, so `15·|s|`
  ///   overflows neither FP32 nor, after rounding, BF16; every product is exact.
  /// * FP16 output: additionally every nonzero product is in FP16's normal range:
  ///   `|s| ≥ 2^-14` and `max|q − zp| · |s| ≤ 65504`.
  @inline(__always)
  private static func vectorScale(
    _ bits: UInt32, _ scaleType: Int4ScaleType, _ outputType: Int4OutputType, _ zp: Int8
  ) -> Float? {
    let s: Float
    switch scaleType {
    case .bf16:
      guard bits & 0x7FFF < 0x7D80 else { return nil }
      s = Float(bitPattern: bits << 16)
    case .f16:
      guard bits & 0x7FFF < 0x7C00 else { return nil }
      s = Float16Bits.decode(UInt16(truncatingIfNeeded: bits))
    case .f32:
      return nil
    }
    if outputType == .f16 {
      let offset = 8 + Int(zp)
      let a = Float(max(offset, 15 - offset))
      guard s.magnitude >= 0x1p-14 && a * s.magnitude <= 65504 else { return nil }
    }
    return s
  }

  /// Whole groups with BF16 scales on the AVX-512 path (`CQuantKernels`): the
  /// C kernel stops at each group whose scale the vectors may not take, which
  /// then goes through the scalar element function, as in `Vector.groups`.
  private static func avx512Groups(
    _ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, groups: Int, chunks: Int,
    scales: UnsafeRawPointer, zeroPoints: UnsafePointer<Int8>?, outputType: Int4OutputType
  ) -> Int4DequantizeCounts {
    let code: Int32 =
      switch outputType {
      case .f32: Int32(CK_OUT_F32)
      case .bf16: Int32(CK_OUT_BF16)
      case .f16: Int32(CK_OUT_F16)
      }
    let n = 32 * chunks
    var inexact: UInt64 = 0
    var slow = Int4DequantizeCounts()
    var g = 0
    while g < groups {
      g += ck_int4_groups_bf16_scale(
        src.assumingMemoryBound(to: UInt8.self) + 16 * chunks * g, dst + n * outputType.byteSize * g,
        groups - g, chunks, scales + 2 * g, zeroPoints.map { $0 + g }, code, &inexact)
      if g < groups {
        slow += scalar(src, n * g, n * (g + 1), scaleBits(scales, g, .bf16), .bf16, zeroPoints?[g] ?? 0, dst, outputType)
        g += 1
      }
    }
    return slow + Int4DequantizeCounts(inexact: Int(inexact))
  }

  /// Elements `c0..<c1` sharing one scale and zero point.
  private static func span(
    _ src: UnsafeRawPointer, _ c0: Int, _ c1: Int, _ sBits: UInt32, _ scaleType: Int4ScaleType, _ zp: Int8,
    _ dst: UnsafeMutableRawPointer, _ outputType: Int4OutputType
  ) -> Int4DequantizeCounts {
    var c = c0
    var counts = Int4DequantizeCounts()
    if vectorizes(scaleType, outputType), let s = vectorScale(sBits, scaleType, outputType, zp) {
      // Odd start: one scalar element, then whole bytes.
      if c & 1 != 0 && c < c1 {
        counts += scalar(src, c, c + 1, sBits, scaleType, zp, dst, outputType)
        c += 1
      }
      let chunks = (c1 - c) / 32
      if chunks > 0 {
        counts += Vector.run(
          src + (c >> 1), dst + outputType.byteSize * c, chunks: chunks,
          offset: Float(8 + Int(zp)), scale: s, outputType: outputType)
        c += 32 * chunks
      }
    }
    if c < c1 { counts += scalar(src, c, c1, sBits, scaleType, zp, dst, outputType) }
    return counts
  }

  private static func scalar(
    _ src: UnsafeRawPointer, _ c0: Int, _ c1: Int, _ sBits: UInt32, _ scaleType: Int4ScaleType, _ zp: Int8,
    _ dst: UnsafeMutableRawPointer, _ outputType: Int4OutputType
  ) -> Int4DequantizeCounts {
    var counts = Int4DequantizeCounts()
    for c in c0..<c1 {
      let e = element(
        code: Int8(nibble(src, c)) - 8, zeroPoint: zp, scaleBits: sBits, scaleType: scaleType, outputType: outputType)
      store(e.bits, dst, c, outputType)
      counts.inexact += e.inexact ? 1 : 0
      counts.nonFinite += e.nonFinite ? 1 : 0
    }
    return counts
  }

  /// SIMD kernels over 16 packed bytes (32 elements) per step, with integer bit
  /// operations only: mask selects (`replacing(with:where:)`) and `SIMDMask`
  /// values lower to per-lane code, and 16-lane conversions are not inlined, so
  /// the work is done on `SIMD4` quarters, whose widening and `Int32 → Float`
  /// conversions compile to `punpck*` and `cvtdq2ps` on baseline x86-64.
  ///
  /// Byte `k` splits into `lo` (element `2k`) and `hi` (element `2k + 1`). For
  /// 16-bit outputs, a 32-bit lane holding `lo`'s code in its low half and `hi`'s
  /// in its high half is exactly two consecutive elements, so no shuffle is needed.
  private enum Vector {
    typealias Quarters = (SIMD4<UInt8>, SIMD4<UInt8>, SIMD4<UInt8>, SIMD4<UInt8>)

    /// Per-lane counts of a vector run. (The vector paths take only scales whose
    /// outputs are all finite, so there is no non-finite count.) A lane gains at
    /// most 8 per chunk; a row would need 2^29 chunks to wrap.
    typealias Tally = SIMD4<UInt32>

    /// One span of `32·chunks` elements, any output.
    static func run(
      _ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, chunks: Int, offset: Float, scale: Float,
      outputType: Int4OutputType
    ) -> Int4DequantizeCounts {
      var t = Tally(repeating: 0)
      let off = SIMD4<Float>(repeating: offset)
      let s = SIMD4<Float>(repeating: scale)
      var p = src
      var d = dst
      for _ in 0..<chunks {
        switch outputType {
        case .f32: f32(p, d, off, s)
        case .bf16: bf16(p, d, off, s, &t)
        case .f16: f16(p, d, off, s, &t)
        }
        p += 16
        d += 32 * outputType.byteSize
      }
      return Int4DequantizeCounts(inexact: Int(t.wrappedSum()))
    }

    /// Whole groups `0..<groups` of `32·chunks` elements each, with per-group
    /// scales and zero points; groups whose scale the vectors cannot take go
    /// through the scalar element function. The loop is written out once per
    /// output type: passed as a closure, the chunk body was not inlined.
    static func groups(
      _ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, groups: Int, chunks: Int,
      scales: UnsafeRawPointer, scaleType: Int4ScaleType, zeroPoints: UnsafePointer<Int8>?,
      outputType: Int4OutputType
    ) -> Int4DequantizeCounts {
      var t = Tally(repeating: 0)
      var slow = Int4DequantizeCounts()
      let n = 32 &* chunks
      var p = src
      var d = dst
      switch outputType {
      case .f32:
        for g in 0..<groups {
          let zp = zeroPoints?[g] ?? 0
          let sBits = scaleBits(scales, g, scaleType)
          if let s = vectorScale(sBits, scaleType, .f32, zp) {
            let off = SIMD4<Float>(repeating: Float(8 &+ Int(zp)))
            let sv = SIMD4<Float>(repeating: s)
            for k in 0..<chunks { f32(p + 16 &* k, d + 128 &* k, off, sv) }
          } else {
            slow += scalar(src, n &* g, n &* (g &+ 1), sBits, scaleType, zp, dst, .f32)
          }
          p += 16 &* chunks
          d += 128 &* chunks
        }
      case .bf16:
        for g in 0..<groups {
          let zp = zeroPoints?[g] ?? 0
          let sBits = scaleBits(scales, g, scaleType)
          if let s = vectorScale(sBits, scaleType, .bf16, zp) {
            let off = SIMD4<Float>(repeating: Float(8 &+ Int(zp)))
            let sv = SIMD4<Float>(repeating: s)
            for k in 0..<chunks { bf16(p + 16 &* k, d + 64 &* k, off, sv, &t) }
          } else {
            slow += scalar(src, n &* g, n &* (g &+ 1), sBits, scaleType, zp, dst, .bf16)
          }
          p += 16 &* chunks
          d += 64 &* chunks
        }
      case .f16:
        for g in 0..<groups {
          let zp = zeroPoints?[g] ?? 0
          let sBits = scaleBits(scales, g, scaleType)
          if let s = vectorScale(sBits, scaleType, .f16, zp) {
            let off = SIMD4<Float>(repeating: Float(8 &+ Int(zp)))
            let sv = SIMD4<Float>(repeating: s)
            for k in 0..<chunks { f16(p + 16 &* k, d + 64 &* k, off, sv, &t) }
          } else {
            slow += scalar(src, n &* g, n &* (g &+ 1), sBits, scaleType, zp, dst, .f16)
          }
          p += 16 &* chunks
          d += 64 &* chunks
        }
      }
      return Int4DequantizeCounts(inexact: Int(t.wrappedSum())) + slow
    }

    /// The low and high nibbles of 16 bytes, as four 4-byte quarters each.
    @inline(__always)
    static func split(_ src: UnsafeRawPointer) -> (lo: Quarters, hi: Quarters) {
      let v = src.loadUnaligned(as: SIMD16<UInt8>.self)
      // Same size (16 bytes), lanes in memory order.
      return (unsafeBitCast(v & 0x0F, to: Quarters.self), unsafeBitCast(v &>> 4, to: Quarters.self))
    }

    /// `(nibble − offset) · scale`, exact for BF16/FP16 scales.
    @inline(__always)
    static func product(_ n: SIMD4<UInt8>, _ offset: SIMD4<Float>, _ scale: SIMD4<Float>) -> SIMD4<Float> {
      (SIMD4<Float>(SIMD4<Int32>(truncatingIfNeeded: n)) - offset) * scale
    }

    @inline(__always)
    static func bits(_ n: SIMD4<UInt8>, _ offset: SIMD4<Float>, _ scale: SIMD4<Float>) -> SIMD4<UInt32> {
      unsafeBitCast(product(n, offset, scale), to: SIMD4<UInt32>.self)
    }

    /// 32 FP32 outputs (128 bytes) from 16 packed bytes.
    @inline(__always)
    static func f32(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ off: SIMD4<Float>, _ s: SIMD4<Float>) {
      let v = src.loadUnaligned(as: SIMD16<UInt8>.self)
      let lo = v & 0x0F
      let hi = v &>> 4
      // Interleave to element order (compiles to punpcklbw / punpckhbw).
      let x0 = SIMD16<UInt8>(
        lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], lo[3], hi[3], lo[4], hi[4], lo[5], hi[5], lo[6], hi[6], lo[7], hi[7])
      let x1 = SIMD16<UInt8>(
        lo[8], hi[8], lo[9], hi[9], lo[10], hi[10], lo[11], hi[11],
        lo[12], hi[12], lo[13], hi[13], lo[14], hi[14], lo[15], hi[15])
      let q0 = unsafeBitCast(x0, to: Quarters.self)
      let q1 = unsafeBitCast(x1, to: Quarters.self)
      dst.storeBytes(of: product(q0.0, off, s), toByteOffset: 0, as: SIMD4<Float>.self)
      dst.storeBytes(of: product(q0.1, off, s), toByteOffset: 16, as: SIMD4<Float>.self)
      dst.storeBytes(of: product(q0.2, off, s), toByteOffset: 32, as: SIMD4<Float>.self)
      dst.storeBytes(of: product(q0.3, off, s), toByteOffset: 48, as: SIMD4<Float>.self)
      dst.storeBytes(of: product(q1.0, off, s), toByteOffset: 64, as: SIMD4<Float>.self)
      dst.storeBytes(of: product(q1.1, off, s), toByteOffset: 80, as: SIMD4<Float>.self)
      dst.storeBytes(of: product(q1.2, off, s), toByteOffset: 96, as: SIMD4<Float>.self)
      dst.storeBytes(of: product(q1.3, off, s), toByteOffset: 112, as: SIMD4<Float>.self)
    }

    /// RNE of exact finite FP32 products to BF16 in the upper 16 bits.
    @inline(__always)
    static func roundBF16(_ b: SIMD4<UInt32>) -> SIMD4<UInt32> { b &+ 0x7FFF &+ ((b &>> 16) & 1) }

    /// 1 where the BF16 rounding of `b` loses bits (any of the low 16 set).
    @inline(__always)
    static func lostBF16(_ b: SIMD4<UInt32>) -> SIMD4<UInt32> { ((b & 0xFFFF) &+ 0xFFFF) &>> 16 }

    /// Eight BF16 outputs (16 bytes) from the quarters of low and high nibbles.
    @inline(__always)
    static func bf16Eight(
      _ l: SIMD4<UInt8>, _ h: SIMD4<UInt8>, _ dst: UnsafeMutableRawPointer, _ off: SIMD4<Float>, _ s: SIMD4<Float>,
      _ t: inout Tally
    ) {
      let a = bits(l, off, s)
      let b = bits(h, off, s)
      dst.storeBytes(of: (roundBF16(a) &>> 16) | (roundBF16(b) & 0xFFFF_0000), as: SIMD4<UInt32>.self)
      t &+= lostBF16(a) &+ lostBF16(b)
    }

    /// 32 BF16 outputs (64 bytes) from 16 packed bytes.
    @inline(__always)
    static func bf16(
      _ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ off: SIMD4<Float>, _ s: SIMD4<Float>, _ t: inout Tally
    ) {
      let (lo, hi) = split(src)
      bf16Eight(lo.0, hi.0, dst, off, s, &t)
      bf16Eight(lo.1, hi.1, dst + 16, off, s, &t)
      bf16Eight(lo.2, hi.2, dst + 32, off, s, &t)
      bf16Eight(lo.3, hi.3, dst + 48, off, s, &t)
    }

    /// FP32 → FP16 RNE of `b`, given that `b` is ±0 or in FP16's normal range
    /// (`2^-14 ≤ |b| ≤ 65504`): rebias the exponent (`−112`), round off 13
    /// mantissa bits to nearest even. The code is in the low 16 bits.
    @inline(__always)
    static func f16Normal(_ b: SIMD4<UInt32>) -> SIMD4<UInt32> {
      let m = b & 0x7FFF_FFFF
      let rounded = ((m &+ 0x0FFF &+ ((m &>> 13) & 1)) &>> 13) &- (112 << 10)
      // ±0 has no exponent to rebias: mask it to 0 (all ones where m != 0).
      let nonzero = SIMD4<UInt32>(truncatingIfNeeded: SIMD4<Int32>(truncatingIfNeeded: 0 &- m) &>> 31)
      return ((b &>> 16) & 0x8000) | (rounded & nonzero)
    }

    /// 1 where the FP16 rounding of a normal-range `b` loses bits (any of the low 13 set).
    @inline(__always)
    static func lostF16(_ b: SIMD4<UInt32>) -> SIMD4<UInt32> { ((b & 0x1FFF) &+ 0x1FFF) &>> 13 }

    /// Eight FP16 outputs (16 bytes) from the quarters of low and high nibbles.
    @inline(__always)
    static func f16Eight(
      _ l: SIMD4<UInt8>, _ h: SIMD4<UInt8>, _ dst: UnsafeMutableRawPointer, _ off: SIMD4<Float>, _ s: SIMD4<Float>,
      _ t: inout Tally
    ) {
      let a = bits(l, off, s)
      let b = bits(h, off, s)
      dst.storeBytes(of: f16Normal(a) | (f16Normal(b) &<< 16), as: SIMD4<UInt32>.self)
      t &+= lostF16(a) &+ lostF16(b)
    }

    /// 32 FP16 outputs (64 bytes) from 16 packed bytes.
    @inline(__always)
    static func f16(
      _ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ off: SIMD4<Float>, _ s: SIMD4<Float>, _ t: inout Tally
    ) {
      let (lo, hi) = split(src)
      f16Eight(lo.0, hi.0, dst, off, s, &t)
      f16Eight(lo.1, hi.1, dst + 16, off, s, &t)
      f16Eight(lo.2, hi.2, dst + 32, off, s, &t)
      f16Eight(lo.3, hi.3, dst + 48, off, s, &t)
    }
  }
}
