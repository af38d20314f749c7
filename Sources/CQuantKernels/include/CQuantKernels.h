// Run-time selected AVX-512 kernels for the `QuantKernels` module; nothing else
// imports this target.
//
// Every function here has a portable Swift twin in QuantKernels and a scalar
// reference there; tests compare all three on seeded inputs. The functions are
// compiled with per-function target attributes, so the rest of the binary stays
// baseline x86-64: call them only when `ck_avx512_available()` returns 1. On
// other architectures they exist, do nothing and return 0.
#ifndef CQUANTKERNELS_H
#define CQUANTKERNELS_H

#include <stddef.h>
#include <stdint.h>

/// 1 when the CPU and OS support AVX-512 F and BW (with ZMM state enabled), else 0.
int ck_avx512_available(void);

/// Output formats of `ck_int4_groups_bf16_scale`.
enum {
  CK_OUT_F32 = 0,
  CK_OUT_BF16 = 1,
  CK_OUT_F16 = 2,
};

/// Dequantizes whole groups of one packed INT4 row with BF16 scales.
///
/// Group `g` covers `32 * chunks` elements: packed bytes
/// `src[16*chunks*g ..< 16*chunks*(g+1)]` (element 2k in the low nibble of byte
/// k), scale `scales[g]` (BF16 bits), zero point `zero_points[g]` in [-8, 7]
/// (or 0 when `zero_points` is NULL). Each output is `(nibble - 8 - zp) * s`,
/// rounded to nearest even into `out_type`.
///
/// Groups are processed in order; the function stops before the first group
/// whose scale the vector path may not take (the same rule as the Swift
/// `vectorScale`: non-finite or |s| >= 2^124; for FP16 output also |s| < 2^-14 or
/// a product above 65504) and returns the number of groups done. `*inexact` is
/// increased by the number of outputs that are not exactly the product.
size_t ck_int4_groups_bf16_scale(
  const uint8_t *src, void *dst, size_t groups, size_t chunks, const void *scales,
  const int8_t *zero_points, int out_type, uint64_t *inexact);

/// Quantizes tile rows (bands) `band_begin ..< band_end` of a row-major
/// `rows x columns` FP32 matrix to FP8 E4M3FN in `block_rows x block_columns`
/// tiles (tails allowed), writing their codes into the `rows x columns` byte
/// matrix `codes` and their scales into the row-major
/// `ceil(rows / block_rows) x ceil(columns / block_columns)` matrix `scales`.
///
/// The rules are those of Swift's `FP8Block`: amax over finite values,
/// `s = amax / 448` (1 when amax is 0, 2^-149 when it underflows),
/// `code = e4m3fn(clamp(w / s, ±448))` with round to nearest even, the FP32
/// quotient correctly rounded. Returns the number of non-finite inputs.
size_t ck_fp8_block_quantize_bands(
  const float *weights, size_t rows, size_t columns, size_t block_rows, size_t block_columns, size_t band_begin,
  size_t band_end, uint8_t *codes, float *scales);

/// What `ck_narrow_errors` found.
typedef struct {
  uint64_t inexact;   ///< lanes whose narrow value differs from the exact one (not overflow)
  uint64_t overflow;  ///< lanes with a finite exact value and a non-finite narrow one
  float max_abs;      ///< largest |narrow - exact| over inexact lanes (NaN differences ignored)
  float max_rel;      ///< largest |narrow - exact| / |exact| over inexact lanes with exact != 0
} ck_error_stats;

/// Compares `n` exact FP32 values with their 16-bit encodings (`format`
/// CK_OUT_BF16 or CK_OUT_F16) and accumulates into `*stats` (max fields take the
/// larger). Equal means equal bits, or both NaN. All arithmetic is FP32, as in
/// the Swift reference `NarrowingErrors.reference`.
void ck_narrow_errors(const float *exact, const uint16_t *narrow, size_t n, int format, ck_error_stats *stats);

/// What `ck_int4_requantize_rows` found (Swift `Int4RequantizeStats`).
typedef struct {
  uint64_t groups, recovered, ambiguous, requantized, zero_groups, non_finite;
  uint64_t code_hist[16];  ///< codes of exactly reproduced groups, by q + 8
  uint64_t maxq_hist[9];   ///< recovered groups by largest |q|
  uint64_t minus8_groups;  ///< recovered groups holding -8
  double sse, plain_sse, searched_sse, ssq_input, max_abs;
} ck_requant_stats;

/// Requantizes `rows` rows of `columns` inputs (`in_type` CK_OUT_BF16, F16 or
/// F32) to INT4 groups of `group_size` with BF16 scales, recovering exact grids
/// (Swift `Int4Requantize.groupReference` is the contract; `rule` 0 = qat7,
/// 1 = minmax; `mse` searches off-grid scales). Writes `rows` packed rows of
/// `4 * ceil(columns / 8)` bytes and `rows * columns / group_size` BF16 scales,
/// and sets `*stats`. Plain C, not AVX-512 code: `use_avx512` only selects a
/// copy compiled for it, and is honoured only where `ck_avx512_available()`.
void ck_int4_requantize_rows(const void *input, int in_type, size_t rows, size_t columns, size_t group_size, int rule,
                             int mse, void *packed, void *scales, int use_avx512, ck_requant_stats *stats);

/// Histogram of |a - b| for `ck_compare_f32`: bin 0 holds exact zeros, bin 1
/// differences below 2^CK_CMP_MIN_EXP, bin 2 + (e - CK_CMP_MIN_EXP) those in
/// [2^e, 2^(e+1)) for e in [CK_CMP_MIN_EXP, CK_CMP_MAX_EXP], the last bin the rest.
enum { CK_CMP_MIN_EXP = -40, CK_CMP_MAX_EXP = 7, CK_CMP_BINS = CK_CMP_MAX_EXP - CK_CMP_MIN_EXP + 4 };

/// What `ck_compare_f32` accumulates (Swift `ErrorStats`).
typedef struct {
  uint64_t count;        ///< pairs with both sides finite
  uint64_t identical;    ///< pairs with equal bits
  uint64_t nonfinite_a, nonfinite_b;
  uint64_t nonfinite_pairs;  ///< pairs with a non-finite side
  uint64_t nonfinite_differ; ///< of those, pairs whose bits differ
  double sum_dd, sum_aa, sum_bb, sum_ab;
  double max_abs;        ///< largest |a - b| (double), 0 when none
  int64_t max_index;     ///< its first index (base + i), -1 when none
  uint64_t hist[CK_CMP_BINS];
} ck_cmp_stats;

/// Accumulates the comparison of `n` FP32 pairs into `*s`; `base` is the index
/// of `a[0]` in the whole tensor. `use_avx512` is honoured only where
/// `ck_avx512_available()`. Swift `ErrorStats.reference` is the contract.
void ck_compare_f32(const float *a, const float *b, size_t n, int64_t base, int use_avx512, ck_cmp_stats *s);

#endif
