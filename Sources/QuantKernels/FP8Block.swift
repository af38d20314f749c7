import CQuantKernels
import Dispatch

/// Block-scaled FP8 E4M3FN quantization in the DeepSeek-V3 layout (FORMATS.md §4).
///
/// A row-major `[rows, columns]` FP32 matrix `W` is cut into `blockRows ×
/// blockColumns` tiles; the last tile of a row or column of tiles may be
/// smaller (a *tail*). Each tile `(bi, bj)` gets one FP32 scale, stored
/// row-major in a `[⌈rows/blockRows⌉, ⌈columns/blockColumns⌉]` matrix
/// (``scaleShape(rows:columns:blockRows:blockColumns:)``); this is
/// `weight_scale_inv`, a **multiplier**:
///
///     W[i, j] ≈ decode(code[i, j]) · scale[⌊i/blockRows⌋, ⌊j/blockColumns⌋]
///
/// Quantization of one tile, all in FP32:
///
/// 1. `amax = max |w|` over the tile's real elements (a tail is not padded)
///    that are finite: NaN and ±inf are left out of `amax`.
/// 2. `s = amax / 448`; `s = 1` when `amax == 0` (all zeros, or nothing
///    finite); `s = 2⁻¹⁴⁹` when `amax / 448` underflows to 0 (`amax < 448·2⁻¹⁴⁹`).
/// 3. `code = Float8E4M3FN.encode(w / s)`: an FP32 division, then clamp to
///    ±448 and round to nearest even. The tile's largest magnitude maps to 448
///    (`0x7E`); NaN maps to `0x7F`/`0xFF`; ±inf saturates to ±448.
///
/// Inputs are expected to be finite (CheckpointKit quantizes dequantized INT4
/// weights); non-finite inputs are counted in the return value so a caller can
/// refuse them. This follows transformers' `Fp8Quantize`
/// (`scale = 448 / amax`, 1 where `amax == 0`, clamp, cast, store `1/scale`)
/// except that the scale is computed as `amax / 448` directly and tails are
/// allowed, as DeepSeek-V3's own checkpoints require.
public enum FP8Block {
  /// The shape of the scale matrix: `(⌈rows / blockRows⌉, ⌈columns / blockColumns⌉)`.
  ///
  /// - Precondition: `rows, columns >= 0`, `blockRows, blockColumns >= 1`; traps otherwise.
  public static func scaleShape(rows: Int, columns: Int, blockRows: Int = 128, blockColumns: Int = 128) -> (rows: Int, columns: Int) {
    precondition(rows >= 0 && columns >= 0, "negative shape")
    precondition(blockRows >= 1 && blockColumns >= 1, "block sizes must be positive")
    return ((rows + blockRows - 1) / blockRows, (columns + blockColumns - 1) / blockColumns)
  }

  /// The scale for a tile whose finite magnitudes peak at `amax` (step 2 above).
  @inlinable
  public static func scale(forAbsMax amax: Float) -> Float {
    if !(amax > 0) { return 1 }
    let s = amax / Float8E4M3FN.maxFinite
    return s == 0 ? .leastNonzeroMagnitude : s
  }

  /// Scalar reference for ``quantize(weights:rows:columns:blockRows:blockColumns:codes:scales:jobs:)``.
  ///
  /// - Returns: The number of non-finite weights (NaN or ±inf).
  /// - Precondition: As ``quantize(weights:rows:columns:blockRows:blockColumns:codes:scales:jobs:)``.
  @discardableResult
  public static func quantizeReference(
    weights: UnsafeBufferPointer<Float>, rows: Int, columns: Int, blockRows: Int = 128, blockColumns: Int = 128,
    codes: UnsafeMutableRawBufferPointer, scales: UnsafeMutableBufferPointer<Float>
  ) -> Int {
    let shape = checkQuantize(weights.count, rows, columns, blockRows, blockColumns, codes.count, scales.count)
    var nonFinite = 0
    for bi in 0..<shape.rows {
      for bj in 0..<shape.columns {
        let r = (bi * blockRows)..<min(rows, (bi + 1) * blockRows)
        let c = (bj * blockColumns)..<min(columns, (bj + 1) * blockColumns)
        var amax: Float = 0
        for i in r {
          for j in c {
            let w = weights[i * columns + j]
            if w.isFinite { amax = max(amax, w.magnitude) } else { nonFinite += 1 }
          }
        }
        let s = scale(forAbsMax: amax)
        scales[bi * shape.columns + bj] = s
        for i in r {
          for j in c {
            codes[i * columns + j] = Float8E4M3FN.encode(weights[i * columns + j] / s)
          }
        }
      }
    }
    return nonFinite
  }

  /// Quantizes a row-major FP32 matrix to block-scaled FP8 E4M3FN: the fast path.
  ///
  /// Bit-identical to ``quantizeReference(weights:rows:columns:blockRows:blockColumns:codes:scales:)``:
  /// `amax` is the same maximum (taken on the magnitude bits), and each code is
  /// the same FP32 division followed by the lane encoder of
  /// ``FloatConversion``. With `jobs > 1`, bands of `blockRows` rows run on
  /// separate threads (`DispatchQueue.concurrentPerform`).
  ///
  /// - Parameters:
  ///   - weights: `rows × columns` values, row-major.
  ///   - rows: Rows of the matrix (`N`, output features).
  ///   - columns: Columns of the matrix (`K`, input features).
  ///   - blockRows: Tile height; DeepSeek-V3 and Kimi K2 use 128.
  ///   - blockColumns: Tile width; DeepSeek-V3 and Kimi K2 use 128.
  ///   - codes: At least `rows × columns` bytes, receives the E4M3FN codes row-major.
  ///   - scales: At least `scaleRows × scaleColumns` values, receives the scales row-major.
  ///   - jobs: The most row bands to run at once (1: the calling thread only).
  ///   - path: Portable Swift or AVX-512 (``KernelPath``); results are identical.
  /// - Returns: The number of non-finite weights (NaN or ±inf); 0 for valid input.
  /// - Precondition: `rows, columns >= 0`, `blockRows, blockColumns, jobs >= 1`,
  ///   and every buffer is large enough; traps otherwise.
  @discardableResult
  public static func quantize(
    weights: UnsafeBufferPointer<Float>, rows: Int, columns: Int, blockRows: Int = 128, blockColumns: Int = 128,
    codes: UnsafeMutableRawBufferPointer, scales: UnsafeMutableBufferPointer<Float>, jobs: Int = 1,
    path: KernelPath = .automatic
  ) -> Int {
    let shape = checkQuantize(weights.count, rows, columns, blockRows, blockColumns, codes.count, scales.count)
    precondition(jobs >= 1, "jobs must be at least 1")
    if shape.rows == 0 || shape.columns == 0 { return 0 }
    let w = UnsafeRawBufferPointer(weights)
    let avx512 = path.useAVX512
    // Tile rows `b0..<b1`: the AVX-512 kernel takes them in one call, so it can
    // overlap each band's reads with the previous band's arithmetic.
    let run = { @Sendable (w: UnsafeRawBufferPointer, codes: UnsafeMutableRawBufferPointer, scales: UnsafeMutableBufferPointer<Float>, b0: Int, b1: Int) -> Int in
      guard avx512 else {
        var nonFinite = 0
        for bi in b0..<b1 {
          nonFinite += quantizeBand(w, bi, rows, columns, blockRows, blockColumns, shape.columns, codes, scales)
        }
        return nonFinite
      }
      return ck_fp8_block_quantize_bands(
        w.baseAddress!.assumingMemoryBound(to: Float.self), rows, columns, blockRows, blockColumns, b0, b1,
        codes.baseAddress!.assumingMemoryBound(to: UInt8.self), scales.baseAddress!)
    }
    let bands = min(shape.rows, jobs)
    if bands == 1 { return run(w, codes, scales, 0, shape.rows) }
    // Threads write disjoint rows of `codes` and `scales` and their own slot of
    // `counts`; concurrentPerform returns only after every one has finished.
    nonisolated(unsafe) let counts = UnsafeMutableBufferPointer<Int>.allocate(capacity: bands)
    defer { counts.deallocate() }
    nonisolated(unsafe) let (sharedWeights, codes, scales) = (w, codes, scales)
    DispatchQueue.concurrentPerform(iterations: bands) { slot in
      counts[slot] = run(sharedWeights, codes, scales, shape.rows * slot / bands, shape.rows * (slot + 1) / bands)
    }
    return counts.reduce(0, +)
  }

  /// Scalar reference for ``dequantize(codes:scales:rows:columns:blockRows:blockColumns:into:jobs:)``.
  ///
  /// - Precondition: As ``dequantize(codes:scales:rows:columns:blockRows:blockColumns:into:jobs:)``.
  public static func dequantizeReference(
    codes: UnsafeRawBufferPointer, scales: UnsafeBufferPointer<Float>, rows: Int, columns: Int,
    blockRows: Int = 128, blockColumns: Int = 128, into weights: UnsafeMutableBufferPointer<Float>
  ) {
    let shape = checkDequantize(codes.count, scales.count, rows, columns, blockRows, blockColumns, weights.count)
    for i in 0..<rows {
      for j in 0..<columns {
        let s = scales[(i / blockRows) * shape.columns + j / blockColumns]
        weights[i * columns + j] = Float8E4M3FN.decode(codes[i * columns + j]) * s
      }
    }
  }

  /// Dequantizes block-scaled FP8 E4M3FN to FP32: `w = decode(code) · scale` in FP32.
  ///
  /// Bit-identical to ``dequantizeReference(codes:scales:rows:columns:blockRows:blockColumns:into:)``.
  /// NaN codes give NaN. This is `weight_dequant_kernel` of DeepSeek-V3 before
  /// its final cast to BF16.
  ///
  /// - Parameters:
  ///   - codes: `rows × columns` E4M3FN codes, row-major, any alignment.
  ///   - scales: The `[⌈rows/blockRows⌉, ⌈columns/blockColumns⌉]` scales, row-major.
  ///   - rows: Rows of the matrix.
  ///   - columns: Columns of the matrix.
  ///   - blockRows: Tile height.
  ///   - blockColumns: Tile width.
  ///   - weights: At least `rows × columns` values; receives the matrix.
  ///   - jobs: The most row bands to run at once.
  /// - Precondition: `rows, columns >= 0`, `blockRows, blockColumns, jobs >= 1`,
  ///   and every buffer is large enough; traps otherwise.
  public static func dequantize(
    codes: UnsafeRawBufferPointer, scales: UnsafeBufferPointer<Float>, rows: Int, columns: Int,
    blockRows: Int = 128, blockColumns: Int = 128, into weights: UnsafeMutableBufferPointer<Float>, jobs: Int = 1
  ) {
    let shape = checkDequantize(codes.count, scales.count, rows, columns, blockRows, blockColumns, weights.count)
    precondition(jobs >= 1, "jobs must be at least 1")
    if shape.rows == 0 || shape.columns == 0 { return }
    let bands = min(shape.rows, jobs)
    Float8E4M3FN.decodeTable.withUnsafeBufferPointer { table in
      // Bands write disjoint rows; concurrentPerform returns only after every band has finished.
      nonisolated(unsafe) let (codes, scales, weights, table) = (codes, scales, weights, table)
      let body = { @Sendable (band: Int) in
        for bi in (shape.rows * band / bands)..<(shape.rows * (band + 1) / bands) {
          for i in (bi * blockRows)..<min(rows, (bi + 1) * blockRows) {
            for bj in 0..<shape.columns {
              let s = scales[bi * shape.columns + bj]
              let j0 = bj * blockColumns
              let j1 = min(columns, j0 + blockColumns)
              dequantizeSpan(codes, table, s, i * columns + j0, i * columns + j1, weights)
            }
          }
        }
      }
      if bands == 1 { body(0) } else { DispatchQueue.concurrentPerform(iterations: bands, execute: body) }
    }
  }

  // MARK: Internals

  static func checkQuantize(
    _ weightCount: Int, _ rows: Int, _ columns: Int, _ blockRows: Int, _ blockColumns: Int, _ codeCount: Int,
    _ scaleCount: Int
  ) -> (rows: Int, columns: Int) {
    let shape = scaleShape(rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns)
    let (n, overflow) = rows.multipliedReportingOverflow(by: columns)
    precondition(!overflow, "rows × columns overflows")
    precondition(weightCount >= n, "weights buffer too small")
    precondition(codeCount >= n, "codes buffer too small")
    precondition(scaleCount >= shape.rows * shape.columns, "scales buffer too small")
    return shape
  }

  static func checkDequantize(
    _ codeCount: Int, _ scaleCount: Int, _ rows: Int, _ columns: Int, _ blockRows: Int, _ blockColumns: Int,
    _ weightCount: Int
  ) -> (rows: Int, columns: Int) {
    checkQuantize(weightCount, rows, columns, blockRows, blockColumns, codeCount, scaleCount)
  }

  /// Quantizes the band of tiles in tile row `bi`. Returns its non-finite count.
  static func quantizeBand(
    _ weights: UnsafeRawBufferPointer, _ bi: Int, _ rows: Int, _ columns: Int, _ blockRows: Int,
    _ blockColumns: Int, _ scaleColumns: Int, _ codes: UnsafeMutableRawBufferPointer,
    _ scales: UnsafeMutableBufferPointer<Float>
  ) -> Int {
    let r0 = bi * blockRows
    let r1 = min(rows, r0 + blockRows)
    return withUnsafeTemporaryAllocation(of: Lanes.self, capacity: scaleColumns) { acc in
      acc.initialize(repeating: Lanes())
      var nonFinite = 0
      // Pass 1: per-tile maxima of the magnitude bits. For non-negative
      // floats the order of the bits is the order of the values, so an
      // integer maximum is the FP32 maximum; ±inf and NaN sort above every
      // finite value, so a tile holding one shows a maximum ≥ 0x7F80_0000
      // and is rescanned below.
      for i in r0..<r1 {
        for bj in 0..<scaleColumns {
          var j = bj * blockColumns
          let j1 = min(columns, j + blockColumns)
          var m = acc[bj]
          while j + 16 <= j1 {
            let a = weights.loadUnaligned(fromByteOffset: 4 * (i * columns + j), as: Lanes.self) & 0x7FFF_FFFF
            m = m.replacing(a, mask: a.greaterMask(m))
            j += 16
          }
          while j < j1 {
            let a = weights.loadUnaligned(fromByteOffset: 4 * (i * columns + j), as: UInt32.self) & 0x7FFF_FFFF
            if a > m[0] { m[0] = a }
            j += 1
          }
          acc[bj] = m
        }
      }
      // Pass 2: scales (rescanning tiles with non-finite values), then codes = encode(w / s).
      for bj in 0..<scaleColumns {
        var amax = acc[bj].max()
        if amax > 0x7F7F_FFFF {
          amax = 0
          for i in r0..<r1 {
            for j in (bj * blockColumns)..<min(columns, (bj + 1) * blockColumns) {
              let a = weights.loadUnaligned(fromByteOffset: 4 * (i * columns + j), as: UInt32.self) & 0x7FFF_FFFF
              if a > 0x7F7F_FFFF { nonFinite += 1 } else if a > amax { amax = a }
            }
          }
        }
        let s = FP8Block.scale(forAbsMax: Float(bitPattern: amax))
        scales[bi * scaleColumns + bj] = s
        acc[bj] = Lanes(repeating: s.bitPattern)
      }
      for i in r0..<r1 {
        for bj in 0..<scaleColumns {
          var j = bj * blockColumns
          let j1 = min(columns, j + blockColumns)
          let sv = acc[bj].asFloats
          let s = sv[0]
          while j + 16 <= j1 {
            let w = weights.loadUnaligned(fromByteOffset: 4 * (i * columns + j), as: SIMD16<Float>.self)
            let q = LaneEncoder.e4m3fn((w / sv).bits)
            codes.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: q), toByteOffset: i * columns + j, as: SIMD16<UInt8>.self)
            j += 16
          }
          while j < j1 {
            let w = Float(bitPattern: weights.loadUnaligned(fromByteOffset: 4 * (i * columns + j), as: UInt32.self))
            codes[i * columns + j] = Float8E4M3FN.encode(w / s)
            j += 1
          }
        }
      }
      return nonFinite
    }
  }

  @inline(__always)
  static func dequantizeSpan(
    _ codes: UnsafeRawBufferPointer, _ table: UnsafeBufferPointer<Float>, _ s: Float, _ k0: Int, _ k1: Int,
    _ weights: UnsafeMutableBufferPointer<Float>
  ) {
    // This is safe: indices are bytes and the table has 256 entries; k1 <= rows × columns, checked.
    let t = table.baseAddress!
    let out = weights.baseAddress!
    var k = k0
    while k + 8 <= k1 {
      let w = UInt64(littleEndian: codes.loadUnaligned(fromByteOffset: k, as: UInt64.self))
      var e: UInt64 = 0
      while e < 8 {
        out[k + Int(e)] = t[Int(truncatingIfNeeded: (w >> (8 * e)) & 0xFF)] * s
        e += 1
      }
      k += 8
    }
    while k < k1 {
      out[k] = t[Int(codes[k])] * s
      k += 1
    }
  }
}

/// Per-channel FP8 E4M3FN quantization: one scale per output row.
///
/// Exactly ``FP8Block`` with `blockRows = 1` and `blockColumns = columns`:
/// `s[i] = amax(|W[i, :]|) / 448` over finite values (1 when that is 0),
/// `code = Float8E4M3FN.encode(w / s[i])`, and `w ≈ decode(code) · s[i]`.
/// This is the `channel` strategy of compressed-tensors' FP8 schemes
/// (`weight_scale` of shape `[rows, 1]`, a multiplier).
public enum FP8Channel {
  /// Scalar reference for ``quantize(weights:rows:columns:codes:scales:jobs:)``.
  @discardableResult
  public static func quantizeReference(
    weights: UnsafeBufferPointer<Float>, rows: Int, columns: Int, codes: UnsafeMutableRawBufferPointer,
    scales: UnsafeMutableBufferPointer<Float>
  ) -> Int {
    if columns == 0 { return fillOnes(rows, scales) }
    return FP8Block.quantizeReference(
      weights: weights, rows: rows, columns: columns, blockRows: 1, blockColumns: columns, codes: codes, scales: scales)
  }

  /// Quantizes each row with its own scale: the fast path.
  ///
  /// - Parameters:
  ///   - weights: `rows × columns` values, row-major.
  ///   - rows: Rows (output channels).
  ///   - columns: Values per row.
  ///   - codes: At least `rows × columns` bytes; receives the codes.
  ///   - scales: At least `rows` values; receives one scale per row (1 for every row when `columns == 0`).
  ///   - jobs: The most threads to use.
  /// - Returns: The number of non-finite weights.
  /// - Precondition: `rows, columns >= 0`, `jobs >= 1`, buffers large enough; traps otherwise.
  @discardableResult
  public static func quantize(
    weights: UnsafeBufferPointer<Float>, rows: Int, columns: Int, codes: UnsafeMutableRawBufferPointer,
    scales: UnsafeMutableBufferPointer<Float>, jobs: Int = 1
  ) -> Int {
    if columns == 0 { return fillOnes(rows, scales) }
    return FP8Block.quantize(
      weights: weights, rows: rows, columns: columns, blockRows: 1, blockColumns: columns, codes: codes,
      scales: scales, jobs: jobs)
  }

  /// Scalar reference for ``dequantize(codes:scales:rows:columns:into:jobs:)``.
  public static func dequantizeReference(
    codes: UnsafeRawBufferPointer, scales: UnsafeBufferPointer<Float>, rows: Int, columns: Int,
    into weights: UnsafeMutableBufferPointer<Float>
  ) {
    if columns == 0 { return }
    FP8Block.dequantizeReference(
      codes: codes, scales: scales, rows: rows, columns: columns, blockRows: 1, blockColumns: columns, into: weights)
  }

  /// Dequantizes per-channel FP8: `w[i, j] = decode(code[i, j]) · scales[i]` in FP32.
  ///
  /// - Precondition: `rows, columns >= 0`, `jobs >= 1`, buffers large enough; traps otherwise.
  public static func dequantize(
    codes: UnsafeRawBufferPointer, scales: UnsafeBufferPointer<Float>, rows: Int, columns: Int,
    into weights: UnsafeMutableBufferPointer<Float>, jobs: Int = 1
  ) {
    if columns == 0 { return }
    FP8Block.dequantize(
      codes: codes, scales: scales, rows: rows, columns: columns, blockRows: 1, blockColumns: columns, into: weights,
      jobs: jobs)
  }

  static func fillOnes(_ rows: Int, _ scales: UnsafeMutableBufferPointer<Float>) -> Int {
    precondition(rows >= 0 && scales.count >= rows, "scales buffer too small")
    for i in 0..<rows { scales[i] = 1 }
    return 0
  }
}
