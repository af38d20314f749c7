/// The error each encoding may introduce, defined once: `ckpt diff`'s default
/// `--fail-above`, `ckpt verify`'s limits, the reports' pass/fail column and
/// the tests all read these numbers.
///
/// A comparison has a reference `A` and a candidate `B`. Rounding a value to
/// an encoding with `p` significant bits moves it by at most `2^-p` of itself,
/// so the relative error `‖A − B‖ / ‖A‖` of a faithful conversion is at most
/// the sum of both sides' unit roundoffs (``unitRoundoff(of:asReference:)``).
/// A tensor above that bound was not produced by rounding alone: a wrong
/// scale, a swapped nibble, a shifted row.
public enum Tolerance {
  /// BF16: 8 significant bits, round to nearest: `2^-8`.
  public static let bf16 = 0x1p-8
  /// FP16: 11 significant bits: `2^-11` (values in the normal range).
  public static let fp16 = 0x1p-11
  /// FP8 E4M3: 4 significant bits: `2^-4`. Block scales put the block's
  /// largest value at 448; values far below it lose more, but their share of
  /// the norm is small (measured on K2-shaped experts: 2.6e-2).
  public static let fp8 = 0x1p-4
  /// FP8 E5M2: 3 significant bits: `2^-3`.
  public static let fp8e5m2 = 0x1p-3
  /// INT4 as a *candidate* (requantized from floats): absmax/7 groups of 32
  /// Gaussian-like weights measure 0.09 relative RMS error; `2^-3` bounds it.
  public static let int4 = 0x1p-3
  /// How far a layer *output* may move relative to the weight error that
  /// caused it: `‖(A − B)·x‖ / ‖A·x‖` concentrates around the weight's
  /// relative error for random `x`, and exceeds it by more than 2× only
  /// when the error aligns with the weight's largest singular directions.
  public static let outputFactor = 2.0
  /// Fraction of tokens whose top-k expert set may differ between `A` and
  /// `B` in a MoE block before `ckpt verify` fails. Rounding can swap two
  /// experts whose scores tie to within the error, so this is not zero.
  public static let routerDisagreement = 0.25

  /// The unit roundoff of an encoding. INT4 as the reference (`A`) is 0: its
  /// values are exactly `q·s`, it is the grid the others are compared to.
  public static func unitRoundoff(of encoding: WeightEncoding, asReference: Bool) -> Double {
    switch encoding {
    case .float(let d):
      switch d {
      case .bf16: bf16
      case .f16: fp16
      case .f8E4M3: fp8
      case .f8E5M2: fp8e5m2
      default: 0
      }
    case .int4: asReference ? 0 : int4
    case .fp8Block: fp8
    case .integer: 0
    }
  }

  /// The largest relative error `‖A − B‖ / ‖A‖` a faithful conversion
  /// between these encodings can show.
  public static func relative(reference a: WeightEncoding, candidate b: WeightEncoding) -> Double {
    // Two floats of the same dtype: a copy, or two roundings of one value.
    if case .float(let x) = a, case .float(let y) = b, x == y { return 0 }
    if case .integer = a, case .integer = b { return 0 }
    return unitRoundoff(of: a, asReference: true) + unitRoundoff(of: b, asReference: false)
  }
}
