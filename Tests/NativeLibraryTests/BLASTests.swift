import BLAS
import Testing

/// `C ← α·op(A)·op(B) + β·C` by the textbook triple loop, accumulated in
/// `Double`: the independent reference for ``BLAS/sgemm``.
private func sgemmReference(
  transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
  a: [Float], lda: Int, b: [Float], ldb: Int, beta: Float, c: [Float], ldc: Int
) -> [Float] {
  var result = c
  for row in 0..<m {
    for column in 0..<n {
      var sum = 0.0
      for inner in 0..<k {
        let left = transA ? a[inner * lda + row] : a[row * lda + inner]
        let right = transB ? b[column * ldb + inner] : b[inner * ldb + column]
        sum += Double(left) * Double(right)
      }
      let index = row * ldc + column
      result[index] = Float(Double(alpha) * sum + Double(beta) * Double(c[index]))
    }
  }
  return result
}

// Serialized: `threadCount` is process-wide OpenBLAS state.
@Suite("BLAS", .serialized)
struct BLASTests {
  @Test("Multiplies two 2×2 matrices")
  func twoByTwo() {
    let a: [Float] = [1, 2, 3, 4]
    let b: [Float] = [5, 6, 7, 8]
    var c = [Float](repeating: .nan, count: 4)
    a.withUnsafeBufferPointer { a in
      b.withUnsafeBufferPointer { b in
        c.withUnsafeMutableBufferPointer { c in
          BLAS.sgemm(
            transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, a: a, lda: 2, b: b, ldb: 2,
            beta: 0, c: c, ldc: 2)
        }
      }
    }
    #expect(c == [19, 22, 43, 50])
  }

  @Test(
    "Matches the triple loop on a 37×29×41 product with padded strides",
    arguments: [(false, false), (true, false), (false, true), (true, true)])
  func randomProduct(transA: Bool, transB: Bool) {
    let (m, n, k) = (37, 29, 41)
    var generator = SeededGenerator(seed: 1234)
    // Stored shapes: A is m×k (k×m when transposed), B is k×n (n×k); each row
    // padded by 3 elements so the strides are exercised.
    let (rowsA, columnsA) = transA ? (k, m) : (m, k)
    let (rowsB, columnsB) = transB ? (n, k) : (k, n)
    let (lda, ldb, ldc) = (columnsA + 3, columnsB + 3, n + 3)
    let a = (0..<rowsA * lda).map { _ in Float.random(in: -1...1, using: &generator) }
    let b = (0..<rowsB * ldb).map { _ in Float.random(in: -1...1, using: &generator) }
    let initial = (0..<m * ldc).map { _ in Float.random(in: -1...1, using: &generator) }
    let (alpha, beta): (Float, Float) = (1.5, -0.5)

    var c = initial
    a.withUnsafeBufferPointer { a in
      b.withUnsafeBufferPointer { b in
        c.withUnsafeMutableBufferPointer { c in
          BLAS.sgemm(
            transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
            b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        }
      }
    }
    let expected = sgemmReference(
      transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b,
      ldb: ldb, beta: beta, c: initial, ldc: ldc)

    var worst: (index: Int, error: Float) = (0, 0)
    for index in c.indices {
      let error = abs(c[index] - expected[index])
      if error > worst.error { worst = (index, error) }
    }
    // 41 products of values in [-1, 1]: float32 rounding stays far below this.
    #expect(
      worst.error <= 1e-4,
      "worst element \(worst.index): \(c[worst.index]) vs \(expected[worst.index])")
    // The padding columns of C are never written.
    for row in 0..<m {
      for column in n..<ldc {
        #expect(c[row * ldc + column] == initial[row * ldc + column])
      }
    }
  }

  @Test("Scales C by beta when k is 0, overwriting NaN when beta is 0")
  func emptyInnerDimension() {
    let empty: [Float] = []
    var c: [Float] = [1, 2, .nan, 4]
    empty.withUnsafeBufferPointer { a in
      c.withUnsafeMutableBufferPointer { c in
        BLAS.sgemm(
          transA: false, transB: false, m: 2, n: 2, k: 0, alpha: 1, a: a, lda: 1, b: a, ldb: 2,
          beta: 0, c: c, ldc: 2)
      }
    }
    #expect(c == [0, 0, 0, 0])
  }

  @Test("Reports the OpenBLAS build and sets the thread count")
  func configuration() {
    #expect(BLAS.configuration.contains("OpenBLAS"))
    #expect(!BLAS.coreName.isEmpty)
    let original = BLAS.threadCount
    #expect(original >= 1)
    defer { BLAS.threadCount = original }
    BLAS.threadCount = 1
    #expect(BLAS.threadCount == 1)
  }

  @Test("Traps when C is shorter than m × n")
  func shortOutputTraps() async {
    await #expect(processExitsWith: .failure) {
      let a: [Float] = [1, 2, 3, 4]
      var c: [Float] = [0, 0, 0]
      a.withUnsafeBufferPointer { a in
        c.withUnsafeMutableBufferPointer { c in
          BLAS.sgemm(
            transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, a: a, lda: 2, b: a,
            ldb: 2, beta: 0, c: c, ldc: 2)
        }
      }
    }
  }
}
