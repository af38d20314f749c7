import CQuantKernels
import Dispatch

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// How two FP32 arrays `A` (the reference) and `B` differ: the sums every
/// comparison metric of `ckpt diff` and `ckpt verify` is computed from.
///
/// Per element pair: equal bits count as identical. A pair with a non-finite
/// side is counted (``nonFiniteA``, ``nonFiniteB``) and left out of everything
/// else. Otherwise `d = Double(a) − Double(b)` enters the double-precision
/// sums, the running maximum of `|d|` (with the first index where it occurs)
/// and the histogram of binary exponents of `|d|` (``histogramBins``).
///
/// Stats of consecutive or disjoint parts merge (``merge(_:)``) into the stats
/// of the whole, so tensors can be streamed in pieces and on many threads.
public struct ErrorStats: Sendable, Equatable {
  /// Pairs with both sides finite.
  public var count = 0
  /// Pairs with equal bits (a NaN equals only the same NaN).
  public var identical = 0
  /// Non-finite elements of `A` and of `B`.
  public var nonFiniteA = 0
  public var nonFiniteB = 0
  /// Pairs with a non-finite side (left out of the sums and the histogram).
  public var nonFinitePairs = 0
  /// Of those, pairs whose bits differ (NaN against a number, or Inf against NaN…).
  public var nonFiniteDiffering = 0
  /// `Σ d²`, `Σ a²`, `Σ b²`, `Σ a·b` over finite pairs, in `Double`.
  public var sumSquaredDifference = 0.0
  public var sumSquaredA = 0.0
  public var sumSquaredB = 0.0
  public var sumProduct = 0.0
  /// The largest `|d|`; 0 when every pair is equal.
  public var maxAbs = 0.0
  /// The first element index where ``maxAbs`` occurs; −1 when ``maxAbs`` is 0.
  public var maxAbsIndex = -1
  /// ``histogramBins`` counts of `|d|` by binary exponent (``binLabel(_:)``).
  public var histogram = [Int](repeating: 0, count: ErrorStats.histogramBins)

  /// No elements.
  public init() {}

  // MARK: The histogram

  /// Smallest and largest binary exponent with a bin of its own.
  public static let histogramMinExponent = Int(CK_CMP_MIN_EXP)
  public static let histogramMaxExponent = Int(CK_CMP_MAX_EXP)
  /// Bin 0: `d = 0`; bin 1: `0 < |d| < 2^min`; bin `2 + e − min`: `|d|` in
  /// `[2^e, 2^(e+1))`; the last bin: `|d| ≥ 2^(max+1)`.
  public static let histogramBins = Int(CK_CMP_BINS)

  /// The bin of one finite `|d|`.
  public static func bin(of absoluteDifference: Double) -> Int {
    if absoluteDifference == 0 { return 0 }
    let e = Int(absoluteDifference.exponent)
    if e < histogramMinExponent { return 1 }
    if e > histogramMaxExponent { return histogramBins - 1 }
    return 2 + e - histogramMinExponent
  }

  /// The lower edge of bin `k` (0 for the first two), as a power of two.
  public static func binLowerEdge(_ k: Int) -> Double {
    switch k {
    case 0, 1: 0
    default: Double(sign: .plus, exponent: k - 2 + histogramMinExponent, significand: 1)
    }
  }

  /// A short label for bin `k`: `"0"`, `"<2^-40"`, `"2^-7"` (meaning `[2^-7, 2^-6)`), `">=2^8"`.
  public static func binLabel(_ k: Int) -> String {
    switch k {
    case 0: "0"
    case 1: "<2^\(histogramMinExponent)"
    case histogramBins - 1: ">=2^\(histogramMaxExponent + 1)"
    default: "2^\(k - 2 + histogramMinExponent)"
    }
  }

  // MARK: Derived metrics

  /// Every element counted: finite pairs plus pairs with a non-finite side.
  public var elements: Int { count + nonFinitePairs }

  /// Root-mean-square difference over finite pairs.
  public var rmse: Double { count == 0 ? 0 : (sumSquaredDifference / Double(count)).squareRoot() }
  /// `‖A − B‖ / ‖A‖`: 0 when equal, +∞ when `A` is all zero and `B` is not.
  public var relativeError: Double {
    if sumSquaredDifference == 0 { return 0 }
    return sumSquaredA == 0 ? .infinity : (sumSquaredDifference / sumSquaredA).squareRoot()
  }
  /// `⟨A, B⟩ / (‖A‖·‖B‖)`: exactly 1 when `A = B` (or both are zero), 0 when one is zero.
  public var cosine: Double {
    if sumSquaredDifference == 0 { return 1 }
    if sumSquaredA == 0 || sumSquaredB == 0 { return 0 }
    return sumProduct / (sumSquaredA.squareRoot() * sumSquaredB.squareRoot())
  }
  /// Signal-to-quantization-noise ratio `10·log10(‖A‖² / ‖A − B‖²)` in dB:
  /// +∞ when equal.
  public var sqnrDB: Double {
    if sumSquaredDifference == 0 { return .infinity }
    if sumSquaredA == 0 { return -.infinity }
    return 10 * log10(sumSquaredA / sumSquaredDifference)
  }
  /// The share of elements with equal bits (1 for an empty tensor).
  public var identicalFraction: Double { elements == 0 ? 1 : Double(identical) / Double(elements) }
  /// Whether every element pair has equal bits.
  public var isBitIdentical: Bool { identical == elements }

  // MARK: Merging

  /// Adds the stats of other elements (disjoint from these).
  public mutating func merge(_ o: ErrorStats) {
    count += o.count
    identical += o.identical
    nonFiniteA += o.nonFiniteA
    nonFiniteB += o.nonFiniteB
    nonFinitePairs += o.nonFinitePairs
    nonFiniteDiffering += o.nonFiniteDiffering
    sumSquaredDifference += o.sumSquaredDifference
    sumSquaredA += o.sumSquaredA
    sumSquaredB += o.sumSquaredB
    sumProduct += o.sumProduct
    if o.maxAbs > maxAbs || (o.maxAbs == maxAbs && o.maxAbs > 0 && o.maxAbsIndex < maxAbsIndex) {
      maxAbs = o.maxAbs
      maxAbsIndex = o.maxAbsIndex
    }
    for k in 0..<histogram.count { histogram[k] += o.histogram[k] }
  }

  /// `self` and `o` merged.
  public func merged(_ o: ErrorStats) -> ErrorStats {
    var s = self
    s.merge(o)
    return s
  }

  // MARK: Kernels

  /// Scalar reference: the contract, written plainly. `base` is the index of
  /// `a[0]` in the whole tensor (for ``maxAbsIndex``).
  public static func reference(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, base: Int = 0) -> ErrorStats {
    precondition(a.count == b.count, "a and b counts differ")
    var s = ErrorStats()
    for i in 0..<a.count {
      let x = a[i]
      let y = b[i]
      if x.bitPattern == y.bitPattern { s.identical += 1 }
      guard x.isFinite, y.isFinite else {
        if !x.isFinite { s.nonFiniteA += 1 }
        if !y.isFinite { s.nonFiniteB += 1 }
        s.nonFinitePairs += 1
        if x.bitPattern != y.bitPattern { s.nonFiniteDiffering += 1 }
        continue
      }
      let dx = Double(x)
      let dy = Double(y)
      let d = dx - dy
      let ad = d.magnitude
      s.count += 1
      s.sumSquaredDifference += d * d
      s.sumSquaredA += dx * dx
      s.sumSquaredB += dy * dy
      s.sumProduct += dx * dy
      if ad > s.maxAbs {
        s.maxAbs = ad
        s.maxAbsIndex = base + i
      }
      s.histogram[bin(of: ad)] += 1
    }
    return s
  }

  /// The same stats with the fastest available kernel, split across up to
  /// `threads` threads. Counts, maxima, the index and the histogram equal
  /// ``reference(_:_:base:)``; the sums differ only in the order of additions.
  public static func measure(
    _ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, base: Int = 0, threads: Int = 1,
    path: KernelPath = .automatic
  ) -> ErrorStats {
    precondition(a.count == b.count, "a and b counts differ")
    precondition(threads >= 1, "threads must be at least 1")
    let n = a.count
    let parts = max(1, min(threads, n / (1 << 16) + 1))
    if parts == 1 { return part(a, b, base, path) }
    // Threads read disjoint ranges and write their own slot; concurrentPerform
    // returns only after every one has finished.
    nonisolated(unsafe) let slots = UnsafeMutableBufferPointer<ErrorStats>.allocate(capacity: parts)
    defer { slots.deinitialize().deallocate() }
    nonisolated(unsafe) let (x, y) = (a, b)
    DispatchQueue.concurrentPerform(iterations: parts) { p in
      let r = (n * p / parts)..<(n * (p + 1) / parts)
      (slots.baseAddress! + p).initialize(
        to: part(UnsafeBufferPointer(rebasing: x[r]), UnsafeBufferPointer(rebasing: y[r]), base + r.lowerBound, path))
    }
    return slots.reduce(ErrorStats()) { $0.merged($1) }
  }

  private static func part(
    _ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, _ base: Int, _ path: KernelPath
  ) -> ErrorStats {
    guard !a.isEmpty else { return ErrorStats() }
    var c = ck_cmp_stats()
    c.max_index = -1
    ck_compare_f32(a.baseAddress!, b.baseAddress!, a.count, Int64(base), path.useAVX512 ? 1 : 0, &c)
    var s = ErrorStats()
    s.count = Int(c.count)
    s.identical = Int(c.identical)
    s.nonFiniteA = Int(c.nonfinite_a)
    s.nonFiniteB = Int(c.nonfinite_b)
    s.nonFinitePairs = Int(c.nonfinite_pairs)
    s.nonFiniteDiffering = Int(c.nonfinite_differ)
    s.sumSquaredDifference = c.sum_dd
    s.sumSquaredA = c.sum_aa
    s.sumSquaredB = c.sum_bb
    s.sumProduct = c.sum_ab
    s.maxAbs = c.max_abs
    s.maxAbsIndex = Int(c.max_index)
    withUnsafeBytes(of: c.hist) { raw in
      for k in 0..<histogramBins { s.histogram[k] = Int(raw.load(fromByteOffset: 8 * k, as: UInt64.self)) }
    }
    return s
  }
}
