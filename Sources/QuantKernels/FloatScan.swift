/// Floating-point formats a scan understands, by their bit layout.
public enum ScanFormat: Sendable, CaseIterable {
  /// bfloat16: 1 sign, 8 exponent, 7 mantissa bits.
  case bf16
  /// IEEE binary16.
  case f16
  /// IEEE binary32.
  case f32
  /// IEEE binary64.
  case f64
  /// OCP FP8 E4M3FN: no infinities; NaN is `S.1111.111`.
  case f8E4M3FN
  /// OCP FP8 E5M2: IEEE-style infinities and NaNs.
  case f8E5M2

  /// Bytes per element.
  public var byteSize: Int {
    switch self {
    case .bf16, .f16: 2
    case .f32: 4
    case .f64: 8
    case .f8E4M3FN, .f8E5M2: 1
    }
  }
}

/// Counts of special values found by a scan.
public struct ScanCounts: Sendable, Equatable {
  /// NaN or infinity (E4M3FN: NaN only, it has no infinities).
  public var nonFinite = 0
  /// Positive or negative zero.
  public var zero = 0
  /// Negative values (sign bit set, excluding −0 and NaN).
  public var negative = 0

  /// Creates counts.
  public init(nonFinite: Int = 0, zero: Int = 0, negative: Int = 0) {
    self.nonFinite = nonFinite
    self.zero = zero
    self.negative = negative
  }
}

/// Scans of raw little-endian float data for NaN, infinity, zero and negative values.
///
/// Classification works on bit patterns, so it is exact for every format and
/// needs no conversion. Every function has a plain scalar reference
/// (`…Reference`) kept forever; the fast versions are tested against it.
public enum FloatScan {
  /// Classifies one element given as its raw bits (zero-extended).
  ///
  /// - Returns: `(nonFinite, zero, negative)` as 0/1 values.
  @inlinable
  public static func classify(_ bits: UInt64, _ format: ScanFormat) -> (Int, Int, Int) {
    let (signBit, magMask, expMask): (UInt64, UInt64, UInt64) =
      switch format {
      case .bf16: (0x8000, 0x7FFF, 0x7F80)
      case .f16: (0x8000, 0x7FFF, 0x7C00)
      case .f32: (0x8000_0000, 0x7FFF_FFFF, 0x7F80_0000)
      case .f64: (0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000)
      case .f8E4M3FN: (0x80, 0x7F, 0x7F)  // only S.1111.111 is special (NaN)
      case .f8E5M2: (0x80, 0x7F, 0x7C)
      }
    let mag = bits & magMask
    let nonFinite = mag >= expMask
    let zero = mag == 0
    let negative = !nonFinite && !zero && bits & signBit != 0
    return (nonFinite ? 1 : 0, zero ? 1 : 0, negative ? 1 : 0)
  }

  /// Scalar reference: counts non-finite, zero and negative elements.
  ///
  /// - Precondition: `data.count` is a multiple of the format's byte size.
  public static func countReference(_ data: UnsafeRawBufferPointer, _ format: ScanFormat) -> ScanCounts {
    let size = format.byteSize
    precondition(data.count % size == 0, "data is not a whole number of elements")
    var c = ScanCounts()
    for i in 0..<(data.count / size) {
      let (n, z, neg) = classify(load(data, i, format), format)
      c.nonFinite += n
      c.zero += z
      c.negative += neg
    }
    return c
  }

  /// Counts non-finite elements; the fast path of ``countReference(_:_:)``'s `nonFinite`.
  ///
  /// Uses 64-byte SIMD blocks with integer arithmetic only: an element is
  /// non-finite when `(bits & magMask) + (signBit - expMask)` carries into the
  /// sign position. Unaligned data is fine.
  ///
  /// - Precondition: `data.count` is a multiple of the format's byte size.
  public static func countNonFinite(_ data: UnsafeRawBufferPointer, _ format: ScanFormat) -> Int {
    precondition(data.count % format.byteSize == 0, "data is not a whole number of elements")
    switch format {
    case .bf16: return count16(data, magMask: 0x7FFF, add: 0x8000 - 0x7F80)
    case .f16: return count16(data, magMask: 0x7FFF, add: 0x8000 - 0x7C00)
    case .f8E4M3FN: return count8(data, magMask: 0x7F, add: 0x80 - 0x7F)
    case .f8E5M2: return count8(data, magMask: 0x7F, add: 0x80 - 0x7C)
    case .f32: return count32(data)
    case .f64: return countReference(data, .f64).nonFinite
    }
  }

  /// The index of the first element that `predicate` accepts, with its bits.
  public static func firstIndex(
    _ data: UnsafeRawBufferPointer, _ format: ScanFormat, where predicate: (UInt64) -> Bool
  ) -> (index: Int, bits: UInt64)? {
    for i in 0..<(data.count / format.byteSize) {
      let b = load(data, i, format)
      if predicate(b) { return (i, b) }
    }
    return nil
  }

  /// Decodes element `i`'s bits as a `Double` (exact for every format here).
  public static func value(bits: UInt64, _ format: ScanFormat) -> Double {
    switch format {
    case .bf16: return Double(Float(bitPattern: UInt32(bits) << 16))
    case .f16:
      #if arch(arm64) || arch(x86_64)
        return Double(Float(Float16(bitPattern: UInt16(bits))))
      #else
        return .nan
      #endif
    case .f32: return Double(Float(bitPattern: UInt32(bits)))
    case .f64: return Double(bitPattern: bits)
    case .f8E4M3FN:
      let s: Double = bits & 0x80 != 0 ? -1 : 1
      let e = Int((bits >> 3) & 0xF)
      let m = Double(bits & 0x7)
      if bits & 0x7F == 0x7F { return .nan }
      return e == 0 ? s * m * 0x1p-9 : s * (1 + m / 8) * Double(sign: .plus, exponent: e - 7, significand: 1)
    case .f8E5M2:
      return value(bits: bits << 8, .f16)
    }
  }

  @inline(__always)
  static func load(_ data: UnsafeRawBufferPointer, _ i: Int, _ format: ScanFormat) -> UInt64 {
    switch format.byteSize {
    case 1: UInt64(data[i])
    case 2: UInt64(UInt16(littleEndian: data.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
    case 4: UInt64(UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
    default: UInt64(littleEndian: data.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
    }
  }

  /// SWAR count over 64-bit words: each word holds `64 / laneBits` elements;
  /// an element is special when `(lane & magMask) + add` sets the lane's top
  /// bit. Per-lane counters live in the spare low bits of an accumulator word
  /// and are flushed before they can overflow. Plain integer arithmetic on
  /// `UInt64` vectorizes on every target, unlike wide SIMD types whose
  /// operations may be lowered lane by lane.
  @inline(__always)
  static func swarCount(
    _ data: UnsafeRawBufferPointer, laneBits: Int, magMask: UInt64, add: UInt64, flushEvery: Int
  ) -> Int {
    let words = data.count / 8
    let top = UInt64(laneBits - 1)
    // One bit per lane, at the lowest position.
    var ones: UInt64 = 0
    var shift = 0
    while shift < 64 { ones |= 1 << UInt64(shift); shift += laneBits }
    var total = 0
    var w = 0
    while w < words {
      let stop = min(words, w + flushEvery)
      var acc: UInt64 = 0
      while w < stop {
        let v = UInt64(littleEndian: data.loadUnaligned(fromByteOffset: 8 * w, as: UInt64.self))
        acc &+= (((v & magMask) &+ add) >> top) & ones
        w += 1
      }
      var a = acc
      while a != 0 {
        total += Int(a & ((1 << UInt64(laneBits)) - 1))
        a >>= UInt64(laneBits)
      }
    }
    return total
  }

  static func count16(_ data: UnsafeRawBufferPointer, magMask: UInt16, add: UInt16) -> Int {
    let words = data.count / 8
    let m = UInt64(magMask) * 0x0001_0001_0001_0001
    let a = UInt64(add) * 0x0001_0001_0001_0001
    var total = swarCount(UnsafeRawBufferPointer(rebasing: data[..<(8 * words)]), laneBits: 16, magMask: m, add: a, flushEvery: 65_535)
    for i in (4 * words)..<(data.count / 2) {
      let v = UInt16(littleEndian: data.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
      total += Int(((v & magMask) &+ add) >> 15)
    }
    return total
  }

  static func count8(_ data: UnsafeRawBufferPointer, magMask: UInt8, add: UInt8) -> Int {
    let words = data.count / 8
    let m = UInt64(magMask) * 0x0101_0101_0101_0101
    let a = UInt64(add) * 0x0101_0101_0101_0101
    var total = swarCount(UnsafeRawBufferPointer(rebasing: data[..<(8 * words)]), laneBits: 8, magMask: m, add: a, flushEvery: 255)
    for i in (8 * words)..<data.count {
      total += Int(((data[i] & magMask) &+ add) >> 7)
    }
    return total
  }

  static func count32(_ data: UnsafeRawBufferPointer) -> Int {
    let words = data.count / 8
    let m: UInt64 = 0x7FFF_FFFF_7FFF_FFFF
    let a: UInt64 = 0x0080_0000_0080_0000
    var total = swarCount(UnsafeRawBufferPointer(rebasing: data[..<(8 * words)]), laneBits: 32, magMask: m, add: a, flushEvery: 1 << 30)
    for i in (2 * words)..<(data.count / 4) {
      let v = UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
      total += Int(((v & 0x7FFF_FFFF) &+ 0x0080_0000) >> 31)
    }
    return total
  }
}

/// Checks on compressed-tensors INT4 `weight_packed` words that need no scale.
public enum PackedInt4Scan {
  /// Scalar reference: counts padding nibbles that are not zero.
  ///
  /// A row of `columns` values packs into `ceil(columns / 8)` little-endian
  /// Int32 words, value `j` in bits `4·(j%8)…` of word `j/8`; nibbles past
  /// `columns` are padding, which `pack_to_int32` writes as 0.
  ///
  /// - Precondition: `data.count == rows * ceil(columns / 8) * 4`.
  public static func countNonzeroPadding(_ data: UnsafeRawBufferPointer, rows: Int, columns: Int) -> Int {
    let words = (columns + 7) / 8
    precondition(data.count == rows * words * 4, "packed buffer size does not match rows × words")
    let used = columns % 8
    if used == 0 { return 0 }
    let mask = UInt32.max << UInt32(4 * used)
    var bad = 0
    for r in 0..<rows {
      let w = UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 4 * (r * words + words - 1), as: UInt32.self))
      if w & mask != 0 { bad += 1 }
    }
    return bad
  }
}
