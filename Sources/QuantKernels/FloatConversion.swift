import Dispatch

/// Row kernels that convert between FP32 and the narrow float formats.
///
/// Every conversion has a scalar reference (``convertRowReference(_:from:to:count:into:)``),
/// which calls the per-format scalar functions of ScalarFormats.swift element
/// by element and is kept forever, and a fast path
/// (``convertRow(_:from:to:count:into:)``) that gives bit-identical results:
///
/// * FP32 → BF16, F16, E4M3FN, E5M2, E8M0: 16 lanes of `UInt32` integer
///   arithmetic with branch-free masks. F16, E4M3FN and E5M2 also use one FP32
///   addition that rounds subnormal results (`x + 2ᵏ` rounds to nearest even in
///   the default rounding mode, like the reference's integer rounding).
/// * BF16, F16 → FP32: 16 lanes of integer arithmetic (F16 subnormals through
///   one exact subtraction).
/// * FP8 → FP32: the format's 256-entry decode table, built from the scalar reference.
///
/// Data may be unaligned and is little-endian. Nothing is allocated.
public enum FloatConversion {
  /// Scalar reference: converts `count` elements of `source` from one format to another.
  ///
  /// One side must be ``FloatFormat/f32``. FP32 → X applies `X.encode`
  /// (see each format's rounding, overflow and NaN policy); X → FP32 applies
  /// `X.decode`, which is exact. FP32 → FP32 copies the bits.
  ///
  /// - Parameters:
  ///   - source: At least `count × from.byteSize` bytes, little-endian, any alignment.
  ///   - from: The source format.
  ///   - to: The destination format.
  ///   - count: The number of elements.
  ///   - destination: At least `count × to.byteSize` bytes, any alignment.
  /// - Precondition: `from == .f32 || to == .f32`, `count >= 0`, and both
  ///   buffers are large enough; traps otherwise.
  public static func convertRowReference(
    _ source: UnsafeRawBufferPointer, from: FloatFormat, to: FloatFormat, count: Int,
    into destination: UnsafeMutableRawBufferPointer
  ) {
    checkArguments(source, from: from, to: to, count: count, into: destination)
    for i in 0..<count {
      let code = loadCode(source, i, from)
      let out = to.encode(from.decode(code))
      storeCode(out, destination, i, to)
    }
  }

  /// Converts `count` elements of `source` from one format to another: the fast path.
  ///
  /// Bit-identical to ``convertRowReference(_:from:to:count:into:)`` for every
  /// input, NaN codes included. Single-threaded; see
  /// ``convertRows(_:from:to:rows:columns:into:jobs:)`` for the multi-core version.
  ///
  /// - Parameters:
  ///   - source: At least `count × from.byteSize` bytes, little-endian, any alignment.
  ///   - from: The source format.
  ///   - to: The destination format.
  ///   - count: The number of elements.
  ///   - destination: At least `count × to.byteSize` bytes, any alignment; it
  ///     may not overlap `source` unless both are the same FP32 buffer.
  /// - Precondition: `from == .f32 || to == .f32`, `count >= 0`, and both
  ///   buffers are large enough; traps otherwise.
  public static func convertRow(
    _ source: UnsafeRawBufferPointer, from: FloatFormat, to: FloatFormat, count: Int,
    into destination: UnsafeMutableRawBufferPointer
  ) {
    checkArguments(source, from: from, to: to, count: count, into: destination)
    switch (from, to) {
    case (.f32, .f32):
      if count > 0, source.baseAddress != UnsafeRawPointer(destination.baseAddress) {
        destination.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: 4 * count)
      }
    case (.f32, .bf16): encodeRow16(source, count, destination, LaneEncoder.bf16)
    case (.f32, .f16): encodeRow16(source, count, destination, LaneEncoder.f16)
    case (.f32, .f8e4m3fn): encodeRow8(source, count, destination, LaneEncoder.e4m3fn)
    case (.f32, .f8e5m2): encodeRow8(source, count, destination, LaneEncoder.e5m2)
    case (.f32, .f8e8m0): encodeRow8(source, count, destination, LaneEncoder.e8m0)
    case (.bf16, .f32): decodeRow16(source, count, destination, LaneDecoder.bf16)
    case (.f16, .f32): decodeRow16(source, count, destination, LaneDecoder.f16)
    case (.f8e4m3fn, .f32):
      Float8E4M3FN.decodeTable.withUnsafeBufferPointer { decodeRow8(source, count, destination, $0) }
    case (.f8e5m2, .f32):
      Float8E5M2.decodeTable.withUnsafeBufferPointer { decodeRow8(source, count, destination, $0) }
    case (.f8e8m0, .f32):
      Float8E8M0.decodeTable.withUnsafeBufferPointer { decodeRow8(source, count, destination, $0) }
    default:
      preconditionFailure("unreachable: checkArguments requires an FP32 side")
    }
  }

  /// Converts a row-major `rows × columns` matrix, splitting whole rows across threads.
  ///
  /// Each thread runs ``convertRow(_:from:to:count:into:)`` on a band of
  /// consecutive rows (at least 64 Ki elements per band, so small inputs stay on
  /// one thread). The result is the same as one `convertRow` over
  /// `rows × columns` elements. Uses `DispatchQueue.concurrentPerform`.
  ///
  /// - Parameters:
  ///   - source: At least `rows × columns × from.byteSize` bytes.
  ///   - from: The source format.
  ///   - to: The destination format.
  ///   - rows: The number of rows.
  ///   - columns: Elements per row.
  ///   - destination: At least `rows × columns × to.byteSize` bytes, not overlapping `source`.
  ///   - jobs: The most bands to run at once; by default the number of active cores.
  /// - Precondition: As ``convertRow(_:from:to:count:into:)``, and `rows, columns >= 0`,
  ///   `jobs >= 1`; traps otherwise.
  public static func convertRows(
    _ source: UnsafeRawBufferPointer, from: FloatFormat, to: FloatFormat, rows: Int, columns: Int,
    into destination: UnsafeMutableRawBufferPointer, jobs: Int = activeCores
  ) {
    precondition(rows >= 0 && columns >= 0, "negative shape")
    precondition(jobs >= 1, "jobs must be at least 1")
    let (count, overflow) = rows.multipliedReportingOverflow(by: columns)
    precondition(!overflow, "rows × columns overflows")
    checkArguments(source, from: from, to: to, count: count, into: destination)
    let bands = bandCount(rows: rows, elementsPerRow: columns, jobs: jobs)
    if bands <= 1 {
      convertRow(source, from: from, to: to, count: count, into: destination)
      return
    }
    // Bands read and write disjoint ranges, and concurrentPerform returns only
    // after every band has finished, so the buffers outlive every use.
    nonisolated(unsafe) let source = source
    nonisolated(unsafe) let destination = destination
    DispatchQueue.concurrentPerform(iterations: bands) { band in
      let r0 = rows * band / bands
      let r1 = rows * (band + 1) / bands
      let e0 = r0 * columns
      let n = (r1 - r0) * columns
      // This is safe: [e0, e0 + n) lies in 0..<count, checked above; bands do not overlap.
      let s = UnsafeRawBufferPointer(rebasing: source[(e0 * from.byteSize)..<((e0 + n) * from.byteSize)])
      let d = UnsafeMutableRawBufferPointer(rebasing: destination[(e0 * to.byteSize)..<((e0 + n) * to.byteSize)])
      convertRow(s, from: from, to: to, count: n, into: d)
    }
  }

  /// The number of active processor cores (at least 1).
  public static var activeCores: Int { systemActiveCores() }

  // MARK: Internals

  /// The number of row bands for `rows` rows: one per 64 Ki elements, at most
  /// `4 × jobs` (so uneven cores still balance) and at most `rows`.
  static func bandCount(rows: Int, elementsPerRow: Int, jobs: Int) -> Int {
    if jobs <= 1 || rows <= 1 { return 1 }
    let total = rows * elementsPerRow
    return max(1, min(rows, 4 * jobs, total / (1 << 16)))
  }

  static func checkArguments(
    _ source: UnsafeRawBufferPointer, from: FloatFormat, to: FloatFormat, count: Int,
    into destination: UnsafeMutableRawBufferPointer
  ) {
    precondition(from == .f32 || to == .f32, "one side of a conversion must be FP32")
    precondition(count >= 0, "negative element count")
    precondition(count <= source.count / from.byteSize, "source buffer too small")
    precondition(count <= destination.count / to.byteSize, "destination buffer too small")
  }

  @inline(__always)
  static func loadCode(_ data: UnsafeRawBufferPointer, _ i: Int, _ format: FloatFormat) -> UInt32 {
    switch format.byteSize {
    case 1: UInt32(data[i])
    case 2: UInt32(UInt16(littleEndian: data.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
    default: UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
    }
  }

  @inline(__always)
  static func storeCode(_ code: UInt32, _ data: UnsafeMutableRawBufferPointer, _ i: Int, _ format: FloatFormat) {
    switch format.byteSize {
    case 1: data[i] = UInt8(truncatingIfNeeded: code)
    case 2: data.storeBytes(of: UInt16(truncatingIfNeeded: code).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
    default: data.storeBytes(of: code.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
    }
  }

  // The row loops take their lane function as a non-escaping closure and are
  // always inlined, so each format gets its own specialized loop.

  @inline(__always)
  static func encodeRow16(
    _ source: UnsafeRawBufferPointer, _ count: Int, _ destination: UnsafeMutableRawBufferPointer,
    _ encode: (Lanes) -> Lanes
  ) {
    var i = 0
    while i + 16 <= count {
      let x = source.loadUnaligned(fromByteOffset: 4 * i, as: Lanes.self)
      destination.storeBytes(of: SIMD16<UInt16>(truncatingIfNeeded: encode(x)), toByteOffset: 2 * i, as: SIMD16<UInt16>.self)
      i += 16
    }
    if i < count {
      let n = count - i
      var x = Lanes()
      withUnsafeMutableBytes(of: &x) {
        $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[(4 * i)..<(4 * count)]))
      }
      var y = SIMD16<UInt16>(truncatingIfNeeded: encode(x))
      withUnsafeBytes(of: &y) {
        UnsafeMutableRawBufferPointer(rebasing: destination[(2 * i)..<(2 * count)])
          .copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<(2 * n)]))
      }
    }
  }

  @inline(__always)
  static func encodeRow8(
    _ source: UnsafeRawBufferPointer, _ count: Int, _ destination: UnsafeMutableRawBufferPointer,
    _ encode: (Lanes) -> Lanes
  ) {
    var i = 0
    while i + 16 <= count {
      let x = source.loadUnaligned(fromByteOffset: 4 * i, as: Lanes.self)
      destination.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: encode(x)), toByteOffset: i, as: SIMD16<UInt8>.self)
      i += 16
    }
    if i < count {
      let n = count - i
      var x = Lanes()
      withUnsafeMutableBytes(of: &x) {
        $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[(4 * i)..<(4 * count)]))
      }
      var y = SIMD16<UInt8>(truncatingIfNeeded: encode(x))
      withUnsafeBytes(of: &y) {
        UnsafeMutableRawBufferPointer(rebasing: destination[i..<count])
          .copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<n]))
      }
    }
  }

  @inline(__always)
  static func decodeRow16(
    _ source: UnsafeRawBufferPointer, _ count: Int, _ destination: UnsafeMutableRawBufferPointer,
    _ decode: (Lanes) -> Lanes
  ) {
    var i = 0
    while i + 16 <= count {
      let h = source.loadUnaligned(fromByteOffset: 2 * i, as: SIMD16<UInt16>.self)
      destination.storeBytes(of: decode(Lanes(truncatingIfNeeded: h)), toByteOffset: 4 * i, as: Lanes.self)
      i += 16
    }
    if i < count {
      let n = count - i
      var h = SIMD16<UInt16>()
      withUnsafeMutableBytes(of: &h) {
        $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[(2 * i)..<(2 * count)]))
      }
      var y = decode(Lanes(truncatingIfNeeded: h))
      withUnsafeBytes(of: &y) {
        UnsafeMutableRawBufferPointer(rebasing: destination[(4 * i)..<(4 * count)])
          .copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<(4 * n)]))
      }
    }
  }

  @inline(__always)
  static func decodeRow8(
    _ source: UnsafeRawBufferPointer, _ count: Int, _ destination: UnsafeMutableRawBufferPointer,
    _ table: UnsafeBufferPointer<Float>
  ) {
    // This is safe: every index is a byte, and every table has 256 entries.
    precondition(table.count == 256)
    let t = table.baseAddress!
    var i = 0
    while i + 8 <= count {
      let w = UInt64(littleEndian: source.loadUnaligned(fromByteOffset: i, as: UInt64.self))
      var k: UInt64 = 0
      while k < 8 {
        let value = t[Int(truncatingIfNeeded: (w >> (8 * k)) & 0xFF)]
        destination.storeBytes(of: value.bitPattern.littleEndian, toByteOffset: 4 * (i + Int(k)), as: UInt32.self)
        k += 1
      }
      i += 8
    }
    while i < count {
      destination.storeBytes(of: t[Int(source[i])].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
      i += 1
    }
  }
}

// MARK: - Lane arithmetic

/// Sixteen `UInt32` lanes: four SSE registers on baseline x86-64. Wider types
/// spill, and `SIMDMask` selects are lowered lane by lane, so masks here are
/// all-ones/all-zero integer lanes made by arithmetic shifts.
typealias Lanes = SIMD16<UInt32>

extension Lanes {
  /// All-ones lanes where `self > bound`. Both sides must be below 2³¹.
  @inline(__always)
  func greaterMask(_ bound: UInt32) -> Lanes {
    let difference = unsafeBitCast(Lanes(repeating: bound) &- self, to: SIMD16<Int32>.self)
    return unsafeBitCast(difference &>> 31, to: Lanes.self)
  }

  /// All-ones lanes where `self > other`, lane by lane. Both sides must be below 2³¹.
  @inline(__always)
  func greaterMask(_ other: Lanes) -> Lanes {
    let difference = unsafeBitCast(other &- self, to: SIMD16<Int32>.self)
    return unsafeBitCast(difference &>> 31, to: Lanes.self)
  }

  /// `ifTrue` where `mask` is all ones, `self` where it is zero.
  @inline(__always)
  func replacing(_ ifTrue: Lanes, mask: Lanes) -> Lanes {
    (ifTrue & mask) | (self & ~mask)
  }

  /// The lanes as `Float`s, bit for bit.
  @inline(__always)
  var asFloats: SIMD16<Float> { unsafeBitCast(self, to: SIMD16<Float>.self) }
}

extension SIMD16<Float> {
  /// The lanes' bit patterns.
  @inline(__always)
  var bits: Lanes { unsafeBitCast(self, to: Lanes.self) }
}

/// FP32 → narrow codes on 16 lanes, each bit-identical to the format's scalar `encode`.
///
/// Normal results use integer round-to-nearest-even on the bits:
/// `(a − rebias + (half − 1) + lsb) >> shift`. Subnormal results use the
/// magic-number addition `a + 2ᵏ`, whose rounding step equals the format's
/// subnormal step, then subtract `2ᵏ`'s bits.
enum LaneEncoder {
  /// See ``BFloat16/encode(_:)``.
  @inline(__always)
  static func bf16(_ x: Lanes) -> Lanes {
    let nan = (x & 0x7FFF_FFFF).greaterMask(0x7F80_0000)
    return ((x &+ 0x7FFF &+ ((x &>> 16) & 1)) &>> 16).replacing(Lanes(repeating: 0x7FC0), mask: nan)
  }

  /// See ``Float16Bits/encode(_:)``.
  @inline(__always)
  static func f16(_ x: Lanes) -> Lanes {
    let a = x & 0x7FFF_FFFF
    let normal = (a &- (112 << 23) &+ 0xFFF &+ ((a &>> 13) & 1)) &>> 13
    // Below 2⁻¹⁴: a + 0.5 rounds to steps of 2⁻²⁴.
    let subnormal = (a.asFloats + 0.5).bits &- 0x3F00_0000
    var r = normal.replacing(subnormal, mask: ~a.greaterMask(0x387F_FFFF))
    r = r.replacing(Lanes(repeating: 0x7C00), mask: a.greaterMask(0x477F_EFFF))  // ≥ 65520
    r = r.replacing(0x7E00 | ((a &>> 13) & 0x3FF), mask: a.greaterMask(0x7F80_0000))
    return r | ((x &>> 16) & 0x8000)
  }

  /// See ``Float8E4M3FN/encode(_:)``.
  @inline(__always)
  static func e4m3fn(_ x: Lanes) -> Lanes {
    let a = x & 0x7FFF_FFFF
    let clamped = a.replacing(Lanes(repeating: 0x43E0_0000), mask: a.greaterMask(0x43E0_0000))  // 448
    let normal = (clamped &- (120 << 23) &+ 0x7_FFFF &+ ((clamped &>> 20) & 1)) &>> 20
    // Below 2⁻⁶: a + 2¹⁴ rounds to steps of 2⁻⁹.
    let subnormal = (clamped.asFloats + 0x1p14).bits &- (141 << 23)
    var r = normal.replacing(subnormal, mask: ~clamped.greaterMask(0x3C7F_FFFF))
    r = r | a.greaterMask(0x7F80_0000)  // NaN: 0x7F after the mask below
    return (r & 0x7F) | ((x &>> 24) & 0x80)
  }

  /// See ``Float8E5M2/encode(_:)``.
  @inline(__always)
  static func e5m2(_ x: Lanes) -> Lanes {
    let a = x & 0x7FFF_FFFF
    let normal = (a &- (112 << 23) &+ 0xF_FFFF &+ ((a &>> 21) & 1)) &>> 21
    // Below 2⁻¹⁴: a + 2⁷ rounds to steps of 2⁻¹⁶.
    let subnormal = (a.asFloats + 0x1p7).bits &- (134 << 23)
    var r = normal.replacing(subnormal, mask: ~a.greaterMask(0x387F_FFFF))
    r = r.replacing(Lanes(repeating: 0x7C), mask: a.greaterMask(0x476F_FFFF))  // ≥ 61440
    r = r.replacing(Lanes(repeating: 0x7E), mask: a.greaterMask(0x7F80_0000))
    return (r & 0x7F) | ((x &>> 24) & 0x80)
  }

  /// See ``Float8E8M0/encode(_:)``.
  @inline(__always)
  static func e8m0(_ x: Lanes) -> Lanes {
    let a = x & 0x7FFF_FFFF
    // Float subnormals round up only above 0x40_0000, normals from 0x40_0000 on.
    let isSubnormal = ~a.greaterMask(0x7F_FFFF) & 1
    let r = (a &+ 0x40_0000 &- isSubnormal) &>> 23
    let negative = unsafeBitCast(unsafeBitCast(x, to: SIMD16<Int32>.self) &>> 31, to: Lanes.self)
    let zero = unsafeBitCast(unsafeBitCast(a &- 1, to: SIMD16<Int32>.self) &>> 31, to: Lanes.self)
    let bad = negative | zero | a.greaterMask(0x7F7F_FFFF)
    return (r | bad) & 0xFF
  }
}

/// 16-bit codes (zero-extended into lanes) → FP32 bits, each bit-identical to the scalar `decode`.
enum LaneDecoder {
  /// See ``BFloat16/decode(_:)``.
  @inline(__always)
  static func bf16(_ h: Lanes) -> Lanes { h &<< 16 }

  /// See ``Float16Bits/decode(_:)``.
  @inline(__always)
  static func f16(_ h: Lanes) -> Lanes {
    let sign = (h & 0x8000) &<< 16
    let shifted = (h & 0x7FFF) &<< 13
    let normal = shifted &+ (112 << 23)
    // Subnormal m·2⁻²⁴ = (1.m·2⁻¹⁴) − 2⁻¹⁴, exact.
    let subnormal = ((shifted &+ (113 << 23)).asFloats - 0x1p-14).bits
    let magnitude = h & 0x7FFF
    var r = normal.replacing(subnormal, mask: ~magnitude.greaterMask(0x3FF))
    r = r.replacing(shifted | 0x7F80_0000, mask: magnitude.greaterMask(0x7BFF))  // ±inf, NaN
    return r | sign
  }
}

#if canImport(Glibc)
  import Glibc
  func systemActiveCores() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
#elseif canImport(Darwin)
  import Darwin
  func systemActiveCores() -> Int { max(1, Int(sysconf(_SC_NPROCESSORS_ONLN))) }
#else
  func systemActiveCores() -> Int { 1 }
#endif
