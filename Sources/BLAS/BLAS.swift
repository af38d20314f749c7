import COpenBLAS

/// Dense linear algebra through OpenBLAS.
///
/// This is the only module that imports `COpenBLAS`. Matrices are row-major,
/// as in C and in safetensors files.
public enum BLAS {
  /// Computes `C ← α·op(A)·op(B) + β·C` in single precision.
  ///
  /// All matrices are row-major. `op(A)` is `m × k` and `op(B)` is `k × n`;
  /// `C` is `m × n`. With `transA == false`, `A` is stored as `m × k` with a
  /// row stride of `lda` elements; with `transA == true` it is stored as
  /// `k × m` and `op(A) = Aᵀ`. `B` is stored the same way (`k × n` or, when
  /// transposed, `n × k`, with row stride `ldb`), and `C` as `m × n` with row
  /// stride `ldc`.
  ///
  /// Edge cases: when `m` or `n` is 0 nothing is touched. When `k` is 0,
  /// `C ← β·C`. When `β == 0`, `C` is overwritten without being read, so it may
  /// hold NaNs or garbage (the BLAS convention).
  ///
  /// Traps (programmer errors, checked before OpenBLAS is called):
  /// * a negative `m`, `n` or `k`, or a dimension that does not fit `blasint`;
  /// * `lda < max(1, transA ? m : k)`, `ldb < max(1, transB ? k : n)`,
  ///   `ldc < max(1, n)`;
  /// * a buffer shorter than its last row needs:
  ///   `a.count < (rowsA − 1)·lda + columnsA` where `rowsA × columnsA` is
  ///   `m × k` (or `k × m` when transposed), likewise for `b`, and
  ///   `c.count < (m − 1)·ldc + n`.
  ///
  /// `c` must not overlap `a` or `b`; this is not checked.
  ///
  /// The corresponding C function is `cblas_sgemm` (with `CblasRowMajor`).
  ///
  /// - Parameters:
  ///   - transA: Whether `A` is stored transposed (`k × m`).
  ///   - transB: Whether `B` is stored transposed (`n × k`).
  ///   - m: Rows of `op(A)` and of `C`.
  ///   - n: Columns of `op(B)` and of `C`.
  ///   - k: Columns of `op(A)`, rows of `op(B)`.
  ///   - alpha: The scale `α` of the product.
  ///   - a: The elements of `A`.
  ///   - lda: The row stride of `A` in elements.
  ///   - b: The elements of `B`.
  ///   - ldb: The row stride of `B` in elements.
  ///   - beta: The scale `β` of the existing `C`.
  ///   - c: The elements of `C`, updated in place.
  ///   - ldc: The row stride of `C` in elements.
  public static func sgemm(
    transA: Bool, transB: Bool,
    m: Int, n: Int, k: Int,
    alpha: Float,
    a: UnsafeBufferPointer<Float>, lda: Int,
    b: UnsafeBufferPointer<Float>, ldb: Int,
    beta: Float,
    c: UnsafeMutableBufferPointer<Float>, ldc: Int
  ) {
    precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative dimension")
    let (rowsA, columnsA) = transA ? (k, m) : (m, k)
    let (rowsB, columnsB) = transB ? (n, k) : (k, n)
    precondition(lda >= max(1, columnsA), "sgemm: lda \(lda) is less than max(1, \(columnsA))")
    precondition(ldb >= max(1, columnsB), "sgemm: ldb \(ldb) is less than max(1, \(columnsB))")
    precondition(ldc >= max(1, n), "sgemm: ldc \(ldc) is less than max(1, \(n))")
    precondition(
      a.count >= requiredCount(rows: rowsA, columns: columnsA, stride: lda),
      "sgemm: a holds \(a.count) elements, fewer than a \(rowsA)×\(columnsA) matrix with stride \(lda)"
    )
    precondition(
      b.count >= requiredCount(rows: rowsB, columns: columnsB, stride: ldb),
      "sgemm: b holds \(b.count) elements, fewer than a \(rowsB)×\(columnsB) matrix with stride \(ldb)"
    )
    precondition(
      c.count >= requiredCount(rows: m, columns: n, stride: ldc),
      "sgemm: c holds \(c.count) elements, fewer than a \(m)×\(n) matrix with stride \(ldc)")

    if m == 0 || n == 0 { return }
    if k == 0 {
      // Reference BLAS semantics; done here so OpenBLAS never sees an empty A or B.
      for row in 0..<m {
        for column in 0..<n {
          let index = row * ldc + column
          c[index] = beta == 0 ? 0 : beta * c[index]
        }
      }
      return
    }
    cblas_sgemm(
      CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
      blasInt(m), blasInt(n), blasInt(k),
      alpha, a.baseAddress, blasInt(lda), b.baseAddress, blasInt(ldb),
      beta, c.baseAddress, blasInt(ldc))
  }

  /// The options OpenBLAS was built with, such as
  /// "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64".
  ///
  /// The corresponding C function is `openblas_get_config`.
  public static var configuration: String {
    String(cString: openblas_get_config())
  }

  /// The name of the CPU kernel set OpenBLAS selected at load time, such as
  /// "Haswell" or "SkylakeX".
  ///
  /// The corresponding C function is `openblas_get_corename`.
  public static var coreName: String {
    String(cString: openblas_get_corename())
  }

  /// The number of threads OpenBLAS uses for one call.
  ///
  /// OpenBLAS reads `OPENBLAS_NUM_THREADS` (or `OMP_NUM_THREADS`) at load time
  /// and otherwise uses every core. The setting is process-wide; setting a
  /// value below 1 traps, and OpenBLAS caps it at the `MAX_THREADS` it was
  /// built with.
  ///
  /// The corresponding C functions are `openblas_get_num_threads` and
  /// `openblas_set_num_threads`.
  public static var threadCount: Int {
    get { Int(openblas_get_num_threads()) }
    set {
      precondition(newValue >= 1, "BLAS.threadCount must be at least 1")
      openblas_set_num_threads(Int32(clamping: newValue))
    }
  }
}

/// The number of elements a row-major `rows × columns` matrix with row stride
/// `stride` spans: `(rows − 1)·stride + columns`, or 0 when it is empty.
///
/// Traps on overflow, which only an impossible buffer could satisfy.
private func requiredCount(rows: Int, columns: Int, stride: Int) -> Int {
  rows == 0 || columns == 0 ? 0 : (rows - 1) * stride + columns
}

/// Converts a dimension to OpenBLAS's `blasint` (32-bit unless OpenBLAS was
/// built with `INTERFACE64`), trapping if it does not fit.
private func blasInt(_ value: Int) -> blasint {
  guard let converted = blasint(exactly: value) else {
    preconditionFailure("sgemm: \(value) does not fit OpenBLAS's blasint")
  }
  return converted
}
