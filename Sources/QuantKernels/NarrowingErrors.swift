import CQuantKernels
import Dispatch

/// How far 16-bit encodings (BF16 or FP16) of FP32 values are from them: the
/// figures of `ckpt convert`'s exactness report.
///
/// All arithmetic is FP32: `d = |y − x|`, relative error `d / |x|`, both
/// rounded to nearest in FP32 (so the maximum is the same whichever order the
/// elements are visited in). Equal means equal bits, or both NaN.
public struct NarrowingErrors: Sendable, Equatable {
  /// Elements whose encoding differs from the exact value (overflow excluded).
  public var inexact = 0
  /// Elements with a finite exact value and a non-finite encoding.
  public var overflow = 0
  /// Largest `d` over inexact elements (NaN differences ignored); 0 when none.
  public var maxAbs: Float = 0
  /// Largest `d / |x|` over inexact elements with `x ≠ 0`; 0 when none.
  public var maxRel: Float = 0

  /// No differences.
  public init() {}

  /// Scalar reference: the contract, written plainly.
  ///
  /// - Parameters:
  ///   - exact: `count` FP32 values.
  ///   - narrow: `count` 16-bit codes (little-endian bits as `UInt16`).
  ///   - format: ``FloatFormat/bf16`` or ``FloatFormat/f16``.
  public static func reference(
    exact: UnsafeBufferPointer<Float>, narrow: UnsafeBufferPointer<UInt16>, format: FloatFormat
  ) -> NarrowingErrors {
    precondition(exact.count == narrow.count, "exact and narrow counts differ")
    precondition(format == .bf16 || format == .f16, "only BF16 and FP16 encodings")
    var e = NarrowingErrors()
    for i in 0..<exact.count {
      let x = exact[i]
      let y = format == .bf16 ? Float(bitPattern: UInt32(narrow[i]) << 16) : Float16Bits.decode(narrow[i])
      if x.bitPattern == y.bitPattern || (x.isNaN && y.isNaN) { continue }
      if x.isFinite && !y.isFinite {
        e.overflow += 1
        continue
      }
      e.inexact += 1
      let d = (y - x).magnitude
      if d.isNaN { continue }
      if d > e.maxAbs { e.maxAbs = d }
      if x != 0 {
        let r = d / x.magnitude
        if r > e.maxRel { e.maxRel = r }
      }
    }
    return e
  }

  /// The same figures with the fastest available kernel, on up to `threads`
  /// threads; equal to ``reference(exact:narrow:format:)``.
  public static func measure(
    exact: UnsafeBufferPointer<Float>, narrow: UnsafeBufferPointer<UInt16>, format: FloatFormat, threads: Int = 1,
    path: KernelPath = .automatic
  ) -> NarrowingErrors {
    precondition(exact.count == narrow.count, "exact and narrow counts differ")
    precondition(format == .bf16 || format == .f16, "only BF16 and FP16 encodings")
    let n = exact.count
    let parts = max(1, min(threads, n / (1 << 16) + 1))
    if parts == 1 { return part(exact, narrow, format, path) }
    // Threads read disjoint ranges and write their own slot; concurrentPerform
    // returns only after every one has finished.
    nonisolated(unsafe) let slots = UnsafeMutableBufferPointer<NarrowingErrors>.allocate(capacity: parts)
    defer { slots.deallocate() }
    nonisolated(unsafe) let (x, y) = (exact, narrow)
    DispatchQueue.concurrentPerform(iterations: parts) { p in
      let r = (n * p / parts)..<(n * (p + 1) / parts)
      (slots.baseAddress! + p).initialize(to: part(UnsafeBufferPointer(rebasing: x[r]), UnsafeBufferPointer(rebasing: y[r]), format, path))
    }
    return slots.reduce(NarrowingErrors()) { $0.merged($1) }
  }

  private static func part(
    _ x: UnsafeBufferPointer<Float>, _ y: UnsafeBufferPointer<UInt16>, _ format: FloatFormat, _ path: KernelPath
  ) -> NarrowingErrors {
    guard path.useAVX512, !x.isEmpty else { return reference(exact: x, narrow: y, format: format) }
    var s = ck_error_stats(inexact: 0, overflow: 0, max_abs: 0, max_rel: 0)
    ck_narrow_errors(x.baseAddress!, y.baseAddress!, x.count, format == .bf16 ? Int32(CK_OUT_BF16) : Int32(CK_OUT_F16), &s)
    var e = NarrowingErrors()
    e.inexact = Int(s.inexact)
    e.overflow = Int(s.overflow)
    e.maxAbs = s.max_abs
    e.maxRel = s.max_rel
    return e
  }

  /// Both sets of figures together.
  public func merged(_ o: NarrowingErrors) -> NarrowingErrors {
    var e = self
    e.inexact += o.inexact
    e.overflow += o.overflow
    e.maxAbs = max(maxAbs, o.maxAbs)
    e.maxRel = max(maxRel, o.maxRel)
    return e
  }
}
