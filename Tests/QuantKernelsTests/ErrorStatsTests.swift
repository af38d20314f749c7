import Foundation
import QuantKernels
import Testing
import TestSupport

/// Pairs like a reference and a lossy copy: small differences of every size,
/// equal elements, ±0, ties of the largest difference, NaN and ±Inf on either side.
private func comparisonPairs(_ n: Int, seed: UInt64) -> ([Float], [Float]) {
  var rng = SeededRandom(seed: seed)
  var a = [Float](repeating: 0, count: n)
  var b = [Float](repeating: 0, count: n)
  for i in 0..<n {
    let x = Float(Int64(bitPattern: rng.next() % 2001) - 1000) / 1000
    a[i] = x
    switch rng.next() % 6 {
    case 0: b[i] = x
    case 1: b[i] = x + Float(Int(rng.next() % 7) - 3) * 0x1p-9
    case 2: b[i] = x * (1 + 0x1p-8)
    case 3: b[i] = Float(bitPattern: x.bitPattern ^ 1)
    case 4: b[i] = x * 1e-12
    default: b[i] = -x
    }
  }
  if n > 40 {
    a[3] = .nan; b[5] = .infinity; a[7] = -.infinity; b[7] = -.infinity
    a[11] = 0; b[11] = -0.0
    // The largest difference, twice, beyond the last histogram bin's edge.
    a[n - 2] = 200; b[n - 2] = -200
    a[n / 2] = 200; b[n / 2] = -200
  }
  return (a, b)
}

@Suite("Comparison statistics")
struct ErrorStatsTests {
  @Test("The reference computes each figure as defined", arguments: [false, true])
  func referenceByHand(avx512: Bool) {
    let a: [Float] = [1, 2, 0, .nan, 4, 0]
    let b: [Float] = [1, 1.5, -0.0, 1, .infinity, 0]
    let paths: [KernelPath] = avx512 ? (KernelPath.avx512.isAvailable ? [.avx512] : []) : [.portable]
    for path in paths {
      let s = a.withUnsafeBufferPointer { x in b.withUnsafeBufferPointer { y in ErrorStats.measure(x, y, base: 10, path: path) } }
      #expect(s.count == 4)
      #expect(s.identical == 2)  // 1 == 1 and 0 == 0; +0 and -0 differ in bits
      #expect(s.nonFiniteA == 1 && s.nonFiniteB == 1 && s.nonFinitePairs == 2 && s.nonFiniteDiffering == 2)
      #expect(s.sumSquaredDifference == 0.25)
      #expect(s.sumSquaredA == 5 && s.sumSquaredB == 3.25 && s.sumProduct == 4)
      #expect(s.maxAbs == 0.5 && s.maxAbsIndex == 11)
      #expect(s.histogram[0] == 3 && s.histogram[ErrorStats.bin(of: 0.5)] == 1)
      #expect(ErrorStats.binLabel(ErrorStats.bin(of: 0.5)) == "2^-1")
      #expect(s.elements == 6)
      #expect(abs(s.relativeError - (0.25 / 5).squareRoot()) < 1e-15)
      #expect(abs(s.cosine - 4 / (5.0.squareRoot() * 3.25.squareRoot())) < 1e-15)
      #expect(abs(s.sqnrDB - 10 * (5 / 0.25 as Double).log10) < 1e-12)
    }
  }

  @Test("Fast paths and threads agree with the reference", arguments: [1, 15, 16, 17, 1000, 70_001, 300_000])
  func fastMatchesReference(n: Int) {
    let (a, b) = comparisonPairs(n, seed: UInt64(n))
    a.withUnsafeBufferPointer { x in
      b.withUnsafeBufferPointer { y in
        let ref = ErrorStats.reference(x, y, base: 5)
        var paths: [KernelPath] = [.portable]
        if KernelPath.avx512.isAvailable { paths.append(.avx512) }
        for path in paths {
          for threads in [1, 2, 3] {
            let fast = ErrorStats.measure(x, y, base: 5, threads: threads, path: path)
            #expect(fast.count == ref.count && fast.identical == ref.identical)
            #expect(fast.nonFiniteA == ref.nonFiniteA && fast.nonFiniteB == ref.nonFiniteB && fast.nonFinitePairs == ref.nonFinitePairs)
            #expect(fast.nonFiniteDiffering == ref.nonFiniteDiffering && (n < 40 || ref.nonFiniteDiffering == 2))
            #expect(fast.maxAbs == ref.maxAbs && fast.maxAbsIndex == ref.maxAbsIndex, "\(path) \(threads)")
            #expect(fast.histogram == ref.histogram, "\(path) \(threads)")
            for (f, r) in [(fast.sumSquaredDifference, ref.sumSquaredDifference), (fast.sumSquaredA, ref.sumSquaredA),
                           (fast.sumSquaredB, ref.sumSquaredB), (fast.sumProduct, ref.sumProduct)] {
              #expect(abs(f - r) <= 1e-12 * max(abs(r), 1e-300), "\(path) \(threads): \(f) vs \(r)")
            }
          }
        }
      }
    }
  }

  @Test("Merging parts gives the stats of the whole; the first index wins ties")
  func merging() {
    let (a, b) = comparisonPairs(5000, seed: 9)
    a.withUnsafeBufferPointer { x in
      b.withUnsafeBufferPointer { y in
        let whole = ErrorStats.reference(x, y)
        let first = ErrorStats.reference(UnsafeBufferPointer(rebasing: x[..<2600]), UnsafeBufferPointer(rebasing: y[..<2600]))
        let second = ErrorStats.reference(UnsafeBufferPointer(rebasing: x[2600...]), UnsafeBufferPointer(rebasing: y[2600...]), base: 2600)
        let merged = second.merged(first)  // order must not matter
        #expect(merged.maxAbsIndex == whole.maxAbsIndex && merged.maxAbsIndex == 2500)
        #expect(merged.histogram == whole.histogram && merged.identical == whole.identical && merged.count == whole.count)
        #expect(abs(merged.sumSquaredDifference - whole.sumSquaredDifference) <= 1e-12 * whole.sumSquaredDifference)
      }
    }
  }

  @Test("Edge cases of the derived metrics")
  func derived() {
    var s = ErrorStats()
    #expect(s.relativeError == 0 && s.cosine == 1 && s.sqnrDB == .infinity && s.identicalFraction == 1)
    s.count = 2
    s.sumSquaredB = 4
    s.sumSquaredDifference = 4
    #expect(s.relativeError == .infinity && s.cosine == 0 && s.sqnrDB == -.infinity)
    #expect(ErrorStats.bin(of: 0x1p-41) == 1 && ErrorStats.bin(of: 0x1p-40) == 2)
    #expect(ErrorStats.bin(of: 255) == ErrorStats.histogramBins - 2 && ErrorStats.bin(of: 256) == ErrorStats.histogramBins - 1)
    #expect(ErrorStats.binLowerEdge(2) == 0x1p-40)
  }
}

extension Double {
  fileprivate var log10: Double { Foundation.log10(self) }
}
