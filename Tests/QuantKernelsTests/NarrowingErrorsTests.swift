import QuantKernels
import Testing
import TestSupport

/// The exactness figures of `ckpt convert` (BF16/FP16 against exact FP32):
/// every fast path equals the scalar reference, and the reference is right on
/// hand-checked values.
@Suite("Narrowing errors")
struct NarrowingErrorsTests {
  static let paths = KernelPath.allCases.filter(\.isAvailable)

  static func encode(_ x: [Float], _ f: FloatFormat) -> [UInt16] {
    x.map { f == .bf16 ? BFloat16.encode($0) : Float16Bits.encode($0) }
  }

  /// Values that round, overflow FP16, underflow, are zero, NaN or infinite, plus random ones.
  static func values(count: Int, seed: UInt64) -> [Float] {
    var rng = SeededRandom(seed: seed)
    let special: [Float] = [0, -0.0, 1, 1 + 0x1p-9, -(1 + 0x1p-8 + 0x1p-12), 65504, 65520, 1e6, -1e6, 0x1p-20, 0x1p-140,
      .infinity, -.infinity, .nan, 3.0e38, 448, 7 * 0.0123]
    var out: [Float] = []
    for i in 0..<count {
      if i % 7 == 3 { out.append(special[(i / 7) % special.count]); continue }
      let bits = UInt32(truncatingIfNeeded: rng.next())
      // Mostly weights-like magnitudes, sometimes any finite pattern.
      let x = i % 5 == 0 ? Float(bitPattern: bits & 0xBFFF_FFFF) : Float(Int32(bitPattern: bits)) * 0x1p-36
      out.append(x.isFinite ? x : 1.5)
    }
    return out
  }

  @Test("Hand-checked: in BF16, 1 + 2^-9 becomes 1 and 65520 becomes 65536; in FP16, 65520 overflows")
  func handChecked() {
    let x: [Float] = [1 + 0x1p-9, 2, 65520, .nan]
    let b = Self.encode(x, .bf16)
    let e = x.withUnsafeBufferPointer { xs in b.withUnsafeBufferPointer { NarrowingErrors.reference(exact: xs, narrow: $0, format: .bf16) } }
    #expect(e.inexact == 2 && e.overflow == 0)
    #expect(e.maxAbs == 16)
    #expect(e.maxRel == Float(0x1p-9) / Float(1 + 0x1p-9))
    let h = Self.encode(x, .f16)
    let f = x.withUnsafeBufferPointer { xs in h.withUnsafeBufferPointer { NarrowingErrors.reference(exact: xs, narrow: $0, format: .f16) } }
    #expect(f.inexact == 0 && f.overflow == 1 && f.maxAbs == 0)
  }

  @Test("Every path and thread count equals the reference, at every length 0...70 and on 300k values", arguments: [FloatFormat.bf16, .f16])
  func pathsMatchReference(format: FloatFormat) {
    var lengths = Array(0...70)
    lengths.append(300_017)
    for n in lengths {
      let x = Self.values(count: n, seed: UInt64(n) &+ 11)
      let y = Self.encode(x, format)
      x.withUnsafeBufferPointer { xs in
        y.withUnsafeBufferPointer { ys in
          let want = NarrowingErrors.reference(exact: xs, narrow: ys, format: format)
          for path in Self.paths {
            for threads in [1, 3] {
              let got = NarrowingErrors.measure(exact: xs, narrow: ys, format: format, threads: threads, path: path)
              #expect(got == want, "n=\(n) \(path) threads=\(threads)")
            }
          }
          if n == 300_017 { #expect(want.inexact > 1000 && want.maxAbs > 0) }
        }
      }
    }
  }
}
