// Scalar references for the narrow floating-point formats.
//
// Every function here works on bit patterns with integer arithmetic only: no
// hardware conversion, no `Float16` type. They are the references that the
// fast row kernels (FloatConversion.swift) and the FP8 block quantizer are
// tested against, and they are kept forever. The policies (rounding,
// overflow, NaN codes) are also written down in Docs/NUMERICS.md.

/// The floating-point formats the conversion kernels read and write.
public enum FloatFormat: Sendable, CaseIterable {
  /// bfloat16: 1 sign, 8 exponent, 7 mantissa bits (`BF16`).
  case bf16
  /// IEEE 754 binary16 (`F16`).
  case f16
  /// IEEE 754 binary32 (`F32`).
  case f32
  /// OCP FP8 E4M3FN (`F8_E4M3`): no infinities, NaN is `S.1111.111`.
  case f8e4m3fn
  /// OCP FP8 E5M2 (`F8_E5M2`): IEEE-style infinities and NaNs.
  case f8e5m2
  /// OCP MX E8M0 scale (`F8_E8M0`, ml_dtypes `float8_e8m0fnu`): unsigned powers of two, no zero.
  case f8e8m0

  /// Bytes per element.
  public var byteSize: Int {
    switch self {
    case .f32: 4
    case .bf16, .f16: 2
    case .f8e4m3fn, .f8e5m2, .f8e8m0: 1
    }
  }

  /// The largest finite value.
  public var maxFinite: Float {
    switch self {
    case .bf16: BFloat16.maxFinite
    case .f16: Float16Bits.maxFinite
    case .f32: Float.greatestFiniteMagnitude
    case .f8e4m3fn: Float8E4M3FN.maxFinite
    case .f8e5m2: Float8E5M2.maxFinite
    case .f8e8m0: Float8E8M0.maxFinite
    }
  }

  /// Encodes `x` with this format's scalar reference.
  ///
  /// - Returns: The code, zero-extended (`x.bitPattern` for ``f32``).
  public func encode(_ x: Float) -> UInt32 {
    switch self {
    case .bf16: UInt32(BFloat16.encode(x))
    case .f16: UInt32(Float16Bits.encode(x))
    case .f32: x.bitPattern
    case .f8e4m3fn: UInt32(Float8E4M3FN.encode(x))
    case .f8e5m2: UInt32(Float8E5M2.encode(x))
    case .f8e8m0: UInt32(Float8E8M0.encode(x))
    }
  }

  /// Decodes `code` with this format's scalar reference.
  ///
  /// - Precondition: `code` fits in ``byteSize`` bytes; traps otherwise.
  public func decode(_ code: UInt32) -> Float {
    precondition(byteSize == 4 || code >> UInt32(8 * byteSize) == 0, "code does not fit the format")
    return switch self {
    case .bf16: BFloat16.decode(UInt16(code))
    case .f16: Float16Bits.decode(UInt16(code))
    case .f32: Float(bitPattern: code)
    case .f8e4m3fn: Float8E4M3FN.decode(UInt8(code))
    case .f8e5m2: Float8E5M2.decode(UInt8(code))
    case .f8e8m0: Float8E8M0.decode(UInt8(code))
    }
  }
}

// MARK: - bfloat16

/// bfloat16 (`BF16`): the upper half of an IEEE binary32.
///
/// Bit layout `s eeeeeeee mmmmmmm`, exponent bias 127, with subnormals,
/// infinities and NaNs exactly like `Float`. Matches torch 2.13
/// `tensor.to(torch.bfloat16)` on every non-NaN input, and torch's scalar
/// `c10::BFloat16` rule on NaN (Docs/NUMERIC-FIXTURES.md, "Encode policy").
public enum BFloat16 {
  /// The largest finite value, `0x7F7F` = (2 − 2⁻⁷)·2¹²⁷ ≈ 3.3895e38.
  public static let maxFinite = Float(bitPattern: 0x7F7F_0000)

  /// The code every NaN input encodes to: `0x7FC0`, as torch's scalar
  /// `c10::BFloat16` `round_to_nearest_even` (torch's vectorized x86 path
  /// writes `0xFFFF` instead; ml_dtypes keeps the sign).
  public static let nanCode: UInt16 = 0x7FC0

  /// Encodes a `Float` as bfloat16, rounding to nearest, ties to even.
  ///
  /// `code = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16` for every non-NaN
  /// input: the low 16 bits are rounded off, so ±0, subnormals, and ±inf keep
  /// their class; finite values at or above (2 − 2⁻⁸)·2¹²⁷ round to ±inf
  /// (IEEE overflow, no saturation). Every NaN, whatever its sign or payload,
  /// encodes to ``nanCode`` (`0x7FC0`).
  ///
  /// - Parameter x: The value to encode.
  /// - Returns: The bfloat16 bit pattern.
  public static func encode(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    if bits & 0x7FFF_FFFF > 0x7F80_0000 { return nanCode }
    let magnitude = roundMagnitude(bits & 0x7FFF_FFFF, mantissaBits: 7, bias: 127)
    return UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000 | magnitude)
  }

  /// Decodes a bfloat16 bit pattern: `Float(bitPattern: UInt32(b) << 16)`.
  ///
  /// Exact for every pattern; NaN payloads and signs are kept.
  ///
  /// - Parameter b: The bfloat16 bit pattern.
  /// - Returns: The value as a `Float`.
  public static func decode(_ b: UInt16) -> Float {
    Float(bitPattern: UInt32(b) << 16)
  }
}

// MARK: - binary16

/// IEEE 754 binary16 (`F16`) through bit manipulation.
///
/// Bit layout `s eeeee mmmmmmmmmm`, exponent bias 15. Subnormals `±m·2⁻²⁴`,
/// infinities `e = 31, m = 0`, NaNs `e = 31, m ≠ 0`. Encoding matches torch 2.13
/// on x86-64 (F16C `vcvtps2ph` with round-to-nearest-even), NaNs included;
/// decoding matches numpy, NaNs included.
public enum Float16Bits {
  /// The largest finite value, `0x7BFF` = 65504.
  public static let maxFinite: Float = 65504

  /// Encodes a `Float` as binary16, rounding to nearest, ties to even.
  ///
  /// * Finite values round to nearest even, including into and within the
  ///   subnormal range (steps of 2⁻²⁴); magnitudes at or below 2⁻²⁵ round to ±0,
  ///   those just above round to the smallest subnormal `0x0001`.
  /// * Magnitudes of 65520 (= 65504 + half a step) and above, and ±inf,
  ///   encode to ±inf (`0x7C00` / `0xFC00`): IEEE overflow, no saturation.
  /// * NaN keeps its sign and the top 9 payload bits and is made quiet:
  ///   `sign | 0x7E00 | (mantissa₃₂ >> 13)`, as the x86 F16C instruction does.
  ///
  /// - Parameter x: The value to encode.
  /// - Returns: The binary16 bit pattern.
  public static func encode(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    let sign = (bits >> 16) & 0x8000
    let a = bits & 0x7FFF_FFFF
    if a > 0x7F80_0000 {
      return UInt16(truncatingIfNeeded: sign | 0x7E00 | (a >> 13) & 0x3FF)
    }
    let magnitude = min(roundMagnitude(a, mantissaBits: 10, bias: 15), 0x7C00)
    return UInt16(truncatingIfNeeded: sign | magnitude)
  }

  /// Decodes a binary16 bit pattern exactly.
  ///
  /// Normal values map to `±1.m·2^(e−15)`, subnormals to `±m·2⁻²⁴`, ±0 and
  /// ±inf to themselves. NaN keeps its sign and payload, which is not made
  /// quiet: `sign | 0x7F80_0000 | (m << 13)`, as numpy does (x86 F16C
  /// `vcvtph2ps` and Swift's `Float(Float16)` also set the quiet bit `0x40_0000`).
  ///
  /// - Parameter b: The binary16 bit pattern.
  /// - Returns: The value as a `Float`; every binary16 value is representable.
  public static func decode(_ b: UInt16) -> Float {
    let code = UInt32(b)
    let sign = (code & 0x8000) << 16
    let magnitude = code & 0x7FFF
    if magnitude >= 0x7C00 {
      return Float(bitPattern: sign | 0x7F80_0000 | (magnitude & 0x3FF) << 13)
    }
    return Float(bitPattern: sign | widenMagnitude(magnitude, mantissaBits: 10, bias: 15))
  }
}

// MARK: - FP8 E4M3FN

/// OCP FP8 E4M3FN (`F8_E4M3`), encoded with saturation.
///
/// Bit layout `s eeee mmm`, exponent bias 7. There are no infinities; `0x7F`
/// and `0xFF` are NaN; the largest finite magnitude is 448 (`0x7E`), the
/// smallest normal 2⁻⁶ (`0x08`), the smallest subnormal 2⁻⁹ (`0x01`).
/// Matches torch 2.13 `to(torch.float8_e4m3fn)` and compressed-tensors'
/// clamp-then-cast; ml_dtypes 0.6.0 differs above 464 (it returns NaN).
public enum Float8E4M3FN {
  /// The largest finite value, 448 (`0x7E`).
  public static let maxFinite: Float = 448

  /// Encodes a `Float` as E4M3FN: clamp to ±448, then round to nearest even.
  ///
  /// * `|x| > 448`, including ±inf, saturates to ±448 (`0x7E` / `0xFE`).
  /// * Otherwise rounds to nearest, ties to even, with subnormals (steps of
  ///   2⁻⁹): `|x| ≤ 2⁻¹⁰` gives ±0; 1.0625 → 1.0; 1.1875 → 1.25.
  /// * NaN encodes to `0x7F` (sign bit clear) or `0xFF` (sign bit set).
  ///
  /// - Parameter x: The value to encode.
  /// - Returns: The E4M3FN code.
  public static func encode(_ x: Float) -> UInt8 {
    let bits = x.bitPattern
    let sign = (bits >> 24) & 0x80
    let a = bits & 0x7FFF_FFFF
    if a > 0x7F80_0000 { return UInt8(sign | 0x7F) }
    let clamped = min(a, Float(448).bitPattern)
    return UInt8(sign | roundMagnitude(clamped, mantissaBits: 3, bias: 7))
  }

  /// Decodes an 8-bit OCP FP8 E4M3FN value.
  ///
  /// Bit layout `s eeee mmm`, exponent bias 7. There are no infinities.
  /// `0x7F` and `0xFF` decode to NaN (`0x7FC0_0000` with the code's sign).
  /// Subnormals (`eeee == 0`) decode to `±mmm × 2⁻⁹`. The largest finite
  /// magnitude is 448.
  ///
  /// - Parameter b: The encoded byte.
  /// - Returns: The exact value as a `Float`; every E4M3FN value is representable.
  public static func decode(_ b: UInt8) -> Float {
    let sign = UInt32(b & 0x80) << 24
    let magnitude = UInt32(b & 0x7F)
    if magnitude == 0x7F { return Float(bitPattern: sign | 0x7FC0_0000) }
    return Float(bitPattern: sign | widenMagnitude(magnitude, mantissaBits: 3, bias: 7))
  }

  /// `decode(code)` for every code, indexed by code.
  public static let decodeTable: [Float] = (0...255).map { decode(UInt8($0)) }
}

// MARK: - FP8 E5M2

/// OCP FP8 E5M2 (`F8_E5M2`): binary16 with the mantissa cut to 2 bits.
///
/// Bit layout `s eeeee mm`, exponent bias 15, with IEEE-style ±inf
/// (`0x7C`/`0xFC`) and NaNs (`0x7D…0x7F` with either sign). The largest finite
/// magnitude is 57344 (`0x7B`), the smallest subnormal 2⁻¹⁶. Matches ml_dtypes
/// 0.6.0 `float8_e5m2` for every input, and torch 2.13 `to(torch.float8_e5m2)`
/// for every non-NaN input.
public enum Float8E5M2 {
  /// The largest finite value, 57344 (`0x7B`).
  public static let maxFinite: Float = 57344

  /// Encodes a `Float` as E5M2, rounding to nearest even; overflow gives ±inf.
  ///
  /// * Finite values round to nearest, ties to even, with subnormals (steps
  ///   of 2⁻¹⁶); `|x| ≤ 2⁻¹⁷` gives ±0.
  /// * Magnitudes of 61440 (= 57344 + half a step) and above, and ±inf,
  ///   encode to ±inf (`0x7C` / `0xFC`). There is no saturation.
  /// * NaN encodes to the quiet NaN `0x7E` (sign bit clear) or `0xFE` (sign
  ///   bit set), as ml_dtypes does; torch 2.13 writes `0x7F`/`0xFF` instead.
  ///
  /// - Parameter x: The value to encode.
  /// - Returns: The E5M2 code.
  public static func encode(_ x: Float) -> UInt8 {
    let bits = x.bitPattern
    let sign = (bits >> 24) & 0x80
    let a = bits & 0x7FFF_FFFF
    if a > 0x7F80_0000 { return UInt8(sign | 0x7E) }
    return UInt8(sign | min(roundMagnitude(a, mantissaBits: 2, bias: 15), 0x7C))
  }

  /// Decodes an E5M2 code exactly.
  ///
  /// Normal codes map to `±1.mm·2^(e−15)`, subnormals to `±mm·2⁻¹⁶`, `0x7C`/`0xFC`
  /// to ±inf, exactly like ``Float16Bits/decode(_:)`` of `code << 8`. Every NaN
  /// code (`0x7D…0x7F` with either sign) decodes to `sign | 0x7FC0_0000`, as
  /// ml_dtypes does.
  ///
  /// - Parameter b: The encoded byte.
  /// - Returns: The exact value as a `Float`.
  public static func decode(_ b: UInt8) -> Float {
    if b & 0x7F > 0x7C { return Float(bitPattern: UInt32(b & 0x80) << 24 | 0x7FC0_0000) }
    return Float16Bits.decode(UInt16(b) << 8)
  }

  /// `decode(code)` for every code, indexed by code.
  public static let decodeTable: [Float] = (0...255).map { decode(UInt8($0)) }
}

// MARK: - FP8 E8M0

/// OCP MX E8M0 (`F8_E8M0`): an unsigned power of two, as ml_dtypes 0.6.0 `float8_e8m0fnu`.
///
/// Code `c` in `0…254` is 2^(c − 127), so `0x00` is 2⁻¹²⁷ (a `Float`
/// subnormal) and `0xFE` is 2¹²⁷. `0xFF` is the only NaN. There is no sign,
/// no zero and no infinity.
public enum Float8E8M0 {
  /// The largest finite value, 2¹²⁷ (`0xFE`).
  public static let maxFinite = Float(bitPattern: 0x7F00_0000)

  /// The NaN code, `0xFF`.
  public static let nanCode: UInt8 = 0xFF

  /// Encodes a `Float` as E8M0, as ml_dtypes 0.6.0 does.
  ///
  /// * A normal `x = 1.m·2^e` rounds on its first mantissa bit, ties away
  ///   from zero: `code = (bits + 0x40_0000) >> 23`. So 1.5 → 2 (`0x80`),
  ///   3 → 4, 0.75 → 1. Rounding above 2¹²⁷ (`x ≥ 1.5·2¹²⁷`) gives NaN.
  /// * A `Float` subnormal `m·2⁻¹⁴⁹` gives `0x00` (2⁻¹²⁷) when
  ///   `m ≤ 0x40_0000`, else `0x01` (2⁻¹²⁶).
  /// * ±0, negative values (including −0), ±inf and NaN give ``nanCode``.
  ///
  /// - Parameter x: The value to encode.
  /// - Returns: The E8M0 code.
  public static func encode(_ x: Float) -> UInt8 {
    let bits = x.bitPattern
    if bits == 0 || bits >= 0x7F80_0000 { return nanCode }  // also every negative input
    if bits < 0x80_0000 { return bits > 0x40_0000 ? 1 : 0 }
    return UInt8(truncatingIfNeeded: min((bits + 0x40_0000) >> 23, 0xFF))
  }

  /// Decodes an E8M0 code: 2^(code − 127) exactly; `0xFF` is NaN (`0x7FC0_0000`).
  ///
  /// - Parameter b: The encoded byte.
  /// - Returns: The value as a `Float` (`0x00` gives the subnormal 2⁻¹²⁷).
  public static func decode(_ b: UInt8) -> Float {
    switch b {
    case 0xFF: Float(bitPattern: 0x7FC0_0000)
    case 0: Float(bitPattern: 0x40_0000)
    default: Float(bitPattern: UInt32(b) << 23)
    }
  }

  /// `decode(code)` for every code, indexed by code.
  public static let decodeTable: [Float] = (0...255).map { decode(UInt8($0)) }
}

// MARK: - Shared bit-level helpers

/// Rounds a finite, non-negative `Float` (given as bits, sign clear) to a
/// binary format with `mantissaBits` stored mantissa bits and exponent `bias`,
/// to nearest, ties to even, with gradual underflow.
///
/// Returns the magnitude code `exponentField << mantissaBits | mantissa`.
/// There is no overflow handling: a value past the format's largest finite
/// value returns a code at or above the all-ones exponent, which each caller
/// maps to its own policy. A carry out of the mantissa moves into the
/// exponent, which is the correct rounding at binade edges.
func roundMagnitude(_ a: UInt32, mantissaBits m: Int, bias: Int) -> UInt32 {
  let exponentField = Int(a >> 23)
  let fraction = a & 0x7F_FFFF
  let minNormalExponent = 1 - bias
  if exponentField != 0 && exponentField - 127 >= minNormalExponent {
    // A normal result: rebias the exponent, round off 23 − m fraction bits.
    let rebased = UInt64(exponentField - 127 + bias) << 23 | UInt64(fraction)
    return UInt32(shiftRightRoundingToEven(rebased, by: 23 - m))
  }
  // A subnormal result (or zero): value = significand·2^(exponent − 23) =
  // q·2^(minNormalExponent − m), so q = significand >> shift, rounded.
  let exponent = exponentField == 0 ? -126 : exponentField - 127
  let significand = exponentField == 0 ? fraction : fraction | 0x80_0000
  let shift = 23 + minNormalExponent - m - exponent
  if shift >= 40 { return 0 }  // significand < 2²⁴ is below half the smallest step
  return UInt32(shiftRightRoundingToEven(UInt64(significand), by: shift))
}

/// `v >> s`, rounded to nearest, ties to even.
func shiftRightRoundingToEven(_ v: UInt64, by s: Int) -> UInt64 {
  if s == 0 { return v }
  let q = v >> UInt64(s)
  let remainder = v & ((1 << UInt64(s)) - 1)
  let half: UInt64 = 1 << UInt64(s - 1)
  return remainder > half || (remainder == half && q & 1 == 1) ? q + 1 : q
}

/// The exact `Float` bits (sign clear) of a finite magnitude code of a binary
/// format with `mantissaBits` and exponent `bias` narrower than `Float`'s.
func widenMagnitude(_ code: UInt32, mantissaBits m: Int, bias: Int) -> UInt32 {
  let exponentField = Int(code >> UInt32(m))
  let mantissa = code & ((1 << UInt32(m)) - 1)
  if exponentField != 0 {
    return UInt32(exponentField - bias + 127) << 23 | mantissa << UInt32(23 - m)
  }
  if mantissa == 0 { return 0 }
  // Subnormal: mantissa·2^(1 − bias − m) = 1.f·2^(1 − bias − m + p), p = ⌊log₂ mantissa⌋.
  let p = 31 - mantissa.leadingZeroBitCount
  let fraction = (mantissa - (1 << UInt32(p))) << UInt32(23 - p)
  return UInt32(1 - bias - m + p + 127) << 23 | fraction
}
