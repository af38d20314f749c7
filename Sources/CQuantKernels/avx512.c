// AVX-512 kernels chosen at run time; see include/CQuantKernels.h.
//
// Each function carries its own target attribute, so this file is compiled for
// baseline x86-64 and only these functions use AVX-512. Arithmetic is plain
// IEEE single precision (no fast-math), the same operations in the same order
// as the Swift kernels, so results are bit-identical to them.
#include "CQuantKernels.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <cpuid.h>
#include <immintrin.h>

#define CK_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,popcnt")))

int ck_avx512_available(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  const unsigned osxsave = 1u << 27, f16c = 1u << 29;
  if (!(c & osxsave) || !(c & f16c)) return 0;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  (void)hi;
  // SSE, AVX, opmask, ZMM upper halves and ZMM16-31 state enabled by the OS.
  if ((lo & 0xE6u) != 0xE6u) return 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  const unsigned f = 1u << 16, dq = 1u << 17, bw = 1u << 30, vl = 1u << 31;
  return (b & (f | dq | bw | vl)) == (f | dq | bw | vl);
}

static inline float ck_float(uint32_t bits) {
  float x;
  memcpy(&x, &bits, 4);
  return x;
}

/// Swift's `vectorScale` for BF16 scales: may the vector path take this group?
static inline int ck_vector_scale(uint16_t bits, int out_type, int zp, float *scale) {
  if ((bits & 0x7FFFu) >= 0x7D80u) return 0;  // non-finite or |s| >= 2^124
  float s = ck_float((uint32_t)bits << 16);
  if (out_type == CK_OUT_F16) {
    int offset = 8 + zp;
    float a = (float)(offset > 15 - offset ? offset : 15 - offset);
    float m = s < 0 ? -s : s;
    if (!(m >= 0x1p-14f && a * m <= 65504.0f)) return 0;
  }
  *scale = s;
  return 1;
}

CK_TARGET
size_t ck_int4_groups_bf16_scale(
  const uint8_t *src, void *dst, size_t groups, size_t chunks, const void *scales,
  const int8_t *zero_points, int out_type, uint64_t *inexact) {
  const __m128i low_nibbles = _mm_set1_epi8(0x0F);
  const __m512i bf16_half = _mm512_set1_epi32(0x7FFF);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i low16 = _mm512_set1_epi32(0xFFFF);
  const __m512i low13 = _mm512_set1_epi32(0x1FFF);
  const size_t out_size = out_type == CK_OUT_F32 ? 4 : 2;
  uint8_t *out = (uint8_t *)dst;
  uint64_t lost = 0;
  size_t g = 0;
  for (; g < groups; g++) {
    int zp = zero_points ? zero_points[g] : 0;
    float s;
    uint16_t sb;
    memcpy(&sb, (const uint8_t *)scales + 2 * g, 2);
    if (!ck_vector_scale(sb, out_type, zp, &s)) break;
    const __m512 sv = _mm512_set1_ps(s);
    const __m512 off = _mm512_set1_ps((float)(8 + zp));
    const uint8_t *p = src + 16 * chunks * g;
    uint8_t *d = out + 32 * out_size * chunks * g;
    for (size_t k = 0; k < chunks; k++, p += 16, d += 32 * out_size) {
      __m128i v = _mm_loadu_si128((const __m128i *)p);
      __m128i lo = _mm_and_si128(v, low_nibbles);
      __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), low_nibbles);
      // Element order: byte k gives elements 2k (low nibble) and 2k + 1.
      __m128i e0 = _mm_unpacklo_epi8(lo, hi);
      __m128i e1 = _mm_unpackhi_epi8(lo, hi);
      __m512 x0 = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(e0)), off), sv);
      __m512 x1 = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(e1)), off), sv);
      __m512i b0 = _mm512_castps_si512(x0);
      __m512i b1 = _mm512_castps_si512(x1);
      switch (out_type) {
      case CK_OUT_F32:
        _mm512_storeu_si512((void *)d, b0);
        _mm512_storeu_si512((void *)(d + 64), b1);
        break;
      case CK_OUT_BF16: {
        // Round to nearest even on the bits; every product here is finite.
        __m512i r0 = _mm512_add_epi32(_mm512_add_epi32(b0, bf16_half), _mm512_and_si512(_mm512_srli_epi32(b0, 16), one));
        __m512i r1 = _mm512_add_epi32(_mm512_add_epi32(b1, bf16_half), _mm512_and_si512(_mm512_srli_epi32(b1, 16), one));
        _mm256_storeu_si256((__m256i *)d, _mm512_cvtepi32_epi16(_mm512_srli_epi32(r0, 16)));
        _mm256_storeu_si256((__m256i *)(d + 32), _mm512_cvtepi32_epi16(_mm512_srli_epi32(r1, 16)));
        lost += (uint64_t)__builtin_popcount(
          (unsigned)_mm512_test_epi32_mask(b0, low16) | ((unsigned)_mm512_test_epi32_mask(b1, low16) << 16));
        break;
      }
      default: {
        // Every nonzero product is in FP16's normal range (checked above).
        _mm256_storeu_si256((__m256i *)d, _mm512_cvtps_ph(x0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm256_storeu_si256((__m256i *)(d + 32), _mm512_cvtps_ph(x1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        lost += (uint64_t)__builtin_popcount(
          (unsigned)_mm512_test_epi32_mask(b0, low13) | ((unsigned)_mm512_test_epi32_mask(b1, low13) << 16));
        break;
      }
      }
    }
  }
  *inexact += lost;
  return g;
}

/// FP8 E4M3FN codes of 16 FP32 lanes, the Swift `LaneEncoder.e4m3fn`.
CK_TARGET
static inline __m512i ck_e4m3fn(__m512i x) {
  const __m512i a = _mm512_and_si512(x, _mm512_set1_epi32(0x7FFFFFFF));
  const __m512i c = _mm512_min_epu32(a, _mm512_set1_epi32(0x43E00000));  // clamp to 448
  __m512i normal = _mm512_sub_epi32(c, _mm512_set1_epi32(120 << 23));
  normal = _mm512_add_epi32(normal, _mm512_set1_epi32(0x7FFFF));
  normal = _mm512_add_epi32(normal, _mm512_and_si512(_mm512_srli_epi32(c, 20), _mm512_set1_epi32(1)));
  normal = _mm512_srli_epi32(normal, 20);
  // Below 2^-6: c + 2^14 rounds to steps of 2^-9.
  __m512i sub = _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(c), _mm512_set1_ps(16384.0f)));
  sub = _mm512_sub_epi32(sub, _mm512_set1_epi32(141 << 23));
  __mmask16 is_normal = _mm512_cmpgt_epu32_mask(c, _mm512_set1_epi32(0x3C7FFFFF));
  __m512i r = _mm512_mask_blend_epi32(is_normal, sub, normal);
  __mmask16 nan = _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7F800000));
  r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7F));
  __m512i sign = _mm512_and_si512(_mm512_srli_epi32(x, 24), _mm512_set1_epi32(0x80));
  return _mm512_or_si512(_mm512_and_si512(r, _mm512_set1_epi32(0x7F)), sign);
}

/// `ck_e4m3fn` for finite `q` with the sign taken from `w` (the quotient
/// `w / s` has the sign of `w` for every `s > 0`, zeros included).
CK_TARGET
static inline __m512i ck_e4m3fn_finite(__m512i q, __m512i w) {
  // min(|q|, 448) with the sign cleared, in one VRANGEPS (imm: absolute minimum, sign 0).
  const __m512i c = _mm512_castps_si512(_mm512_range_ps(_mm512_castsi512_ps(q), _mm512_set1_ps(448.0f), 0x0A));
  __m512i normal = _mm512_add_epi32(c, _mm512_set1_epi32(0x7FFFF - (120 << 23)));
  normal = _mm512_add_epi32(normal, _mm512_and_si512(_mm512_srli_epi32(c, 20), _mm512_set1_epi32(1)));
  normal = _mm512_srli_epi32(normal, 20);
  // Results below 2^-6 (few in real weights) take the subnormal formula of ck_e4m3fn.
  __mmask16 small = _mm512_cmplt_epu32_mask(c, _mm512_set1_epi32(0x3C800000));
  if (small) {
    __m512i sub = _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(c), _mm512_set1_ps(16384.0f)));
    normal = _mm512_mask_sub_epi32(normal, small, sub, _mm512_set1_epi32(141 << 23));
  }
  // Every code is at most 0x7E here, so no mask is needed before the sign.
  return _mm512_or_si512(normal, _mm512_and_si512(_mm512_srli_epi32(w, 24), _mm512_set1_epi32(0x80)));
}

/// `w / s` correctly rounded, without a division: `q0 = w·r` with
/// `r = RN(1/s)` is within an ulp of `w/s`, the residual `w − q0·s` is exact
/// in FP32 and `RN(q0 + residual·r)` is the correctly rounded quotient
/// (Markstein's theorem; both steps are fused multiply-adds). Valid when `r`
/// and every quotient are normal or tiny enough not to matter (the caller
/// takes this path only for scales in [2^-125, 2^125]; quotients below 2^-10
/// all encode to a signed zero). Zero signs are not kept: the encoder takes
/// the sign from `w`. Checked bit for bit against `_mm512_div_ps` on 1.7e10
/// random quotients while writing this, and by the test suite.
CK_TARGET
static inline __m512 ck_quotient(__m512 w, __m512 s, __m512 r) {
  __m512 q0 = _mm512_mul_ps(w, r);
  __m512 residual = _mm512_fnmadd_ps(q0, s, w);
  return _mm512_fmadd_ps(residual, r, q0);
}

/// Tiles per strip: rows of a strip are read as one contiguous run, and the
/// per-tile state (maxima, scales) stays in a few KiB of stack.
#define CK_STRIP_TILES 64

/// Folds the magnitude bits of `n` floats at `row` into `acc` (lane-wise maximum).
CK_TARGET
static inline __m512i ck_amax_bits(__m512i acc, const uint8_t *row, size_t n) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  size_t j = 0;
  for (; j + 16 <= n; j += 16)
    acc = _mm512_max_epu32(acc, _mm512_and_si512(_mm512_loadu_si512((const void *)(row + 4 * j)), abs_mask));
  if (j < n) {
    __mmask16 tail = (__mmask16)((1u << (n - j)) - 1u);
    acc = _mm512_max_epu32(acc, _mm512_and_si512(_mm512_maskz_loadu_epi32(tail, row + 4 * j), abs_mask));
  }
  return acc;
}

/// Codes of `n` floats at `row` with scale `s` (reciprocal `r`): the exact
/// division and full encoder, or, when `fast`, the division-free quotient and
/// the finite-only encoder (identical results for finite inputs).
CK_TARGET
static inline void ck_encode_span(const uint8_t *row, uint8_t *out, size_t n, __m512 s, __m512 r, int fast) {
  // After the two packs, dword 4k + j holds bytes 4k..4k+3 of vector j.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  size_t j = 0;
  if (fast) {
    // 64 codes per store: vpmovdb to memory is slow on AMD cores, so four
    // vectors are packed (within 128-bit lanes) and put in order by vpermd.
    for (; j + 64 <= n; j += 64) {
      const __m512 w0 = _mm512_loadu_ps((const void *)(row + 4 * j));
      const __m512 w1 = _mm512_loadu_ps((const void *)(row + 4 * j + 64));
      const __m512 w2 = _mm512_loadu_ps((const void *)(row + 4 * j + 128));
      const __m512 w3 = _mm512_loadu_ps((const void *)(row + 4 * j + 192));
      const __m512i c0 = ck_e4m3fn_finite(_mm512_castps_si512(ck_quotient(w0, s, r)), _mm512_castps_si512(w0));
      const __m512i c1 = ck_e4m3fn_finite(_mm512_castps_si512(ck_quotient(w1, s, r)), _mm512_castps_si512(w1));
      const __m512i c2 = ck_e4m3fn_finite(_mm512_castps_si512(ck_quotient(w2, s, r)), _mm512_castps_si512(w2));
      const __m512i c3 = ck_e4m3fn_finite(_mm512_castps_si512(ck_quotient(w3, s, r)), _mm512_castps_si512(w3));
      const __m512i bytes = _mm512_packus_epi16(_mm512_packus_epi32(c0, c1), _mm512_packus_epi32(c2, c3));
      _mm512_storeu_si512((void *)(out + j), _mm512_permutexvar_epi32(order, bytes));
    }
  }
  for (; j + 16 <= n; j += 16) {
    __m512 q = _mm512_div_ps(_mm512_loadu_ps((const void *)(row + 4 * j)), s);
    _mm_storeu_si128((__m128i *)(out + j), _mm512_cvtepi32_epi8(ck_e4m3fn(_mm512_castps_si512(q))));
  }
  if (j < n) {
    __mmask16 tail = (__mmask16)((1u << (n - j)) - 1u);
    __m512 q = _mm512_div_ps(_mm512_maskz_loadu_ps(tail, row + 4 * j), s);
    _mm512_mask_cvtepi32_storeu_epi8(out + j, tail, ck_e4m3fn(_mm512_castps_si512(q)));
  }
}

CK_TARGET
size_t ck_fp8_block_quantize_bands(
  const float *weights, size_t rows, size_t columns, size_t block_rows, size_t block_columns, size_t band_begin,
  size_t band_end, uint8_t *codes, float *scales) {
  const uint8_t *w = (const uint8_t *)weights;
  size_t non_finite = 0;
  size_t tiles = (columns + block_columns - 1) / block_columns;
  for (size_t t0 = 0; t0 < tiles; t0 += CK_STRIP_TILES) {
    size_t strip = tiles - t0 < CK_STRIP_TILES ? tiles - t0 : CK_STRIP_TILES;
    size_t width[CK_STRIP_TILES];
    __m512i m[CK_STRIP_TILES];
    __m512 sv[CK_STRIP_TILES], rv[CK_STRIP_TILES];
    int fast[CK_STRIP_TILES];
    for (size_t t = 0; t < strip; t++) {
      size_t j0 = (t0 + t) * block_columns;
      width[t] = columns - j0 < block_columns ? columns - j0 : block_columns;
      m[t] = _mm512_setzero_si512();
    }
    // Pass 1 of the first band on its own; every later band's pass 1 runs
    // inside the previous band's pass 2, so the loads from memory overlap
    // with the arithmetic.
    for (size_t i = band_begin * block_rows; i < rows && i < (band_begin + 1) * block_rows; i++)
      for (size_t t = 0; t < strip; t++)
        m[t] = ck_amax_bits(m[t], w + 4 * (i * columns + (t0 + t) * block_columns), width[t]);
    for (size_t b = band_begin; b < band_end; b++) {
      size_t r0 = b * block_rows;
      size_t r1 = r0 + block_rows < rows ? r0 + block_rows : rows;
      // Scales. Bit order is value order for non-negative floats, and inf and
      // NaN sort above every finite value: a larger maximum means a rescan.
      for (size_t t = 0; t < strip; t++) {
        size_t j0 = (t0 + t) * block_columns;
        uint32_t amax = _mm512_reduce_max_epu32(m[t]);
        int clean = amax <= 0x7F7FFFFFu;
        if (!clean) {
          amax = 0;
          for (size_t i = r0; i < r1; i++) {
            for (size_t j = 0; j < width[t]; j++) {
              uint32_t a;
              memcpy(&a, w + 4 * (i * columns + j0 + j), 4);
              a &= 0x7FFFFFFFu;
              if (a > 0x7F7FFFFFu) non_finite++;
              else if (a > amax) amax = a;
            }
          }
        }
        float s = 1.0f;
        if (amax > 0) {
          s = ck_float(amax) / 448.0f;
          if (s == 0) s = 0x1p-149f;
        }
        scales[b * tiles + t0 + t] = s;
        sv[t] = _mm512_set1_ps(s);
        rv[t] = _mm512_set1_ps(1.0f / s);
        fast[t] = clean && s >= 0x1p-125f && s <= 0x1p125f;
        m[t] = _mm512_setzero_si512();
      }
      // Pass 2: codes = e4m3fn(w / s), row by row across the strip, with the
      // next band's pass 1 on the same columns.
      int next = b + 1 < band_end;
      for (size_t i = r0; i < r1; i++) {
        size_t k = i + block_rows;  // the next band's row at the same position
        for (size_t t = 0; t < strip; t++) {
          size_t j0 = (t0 + t) * block_columns;
          ck_encode_span(w + 4 * (i * columns + j0), codes + i * columns + j0, width[t], sv[t], rv[t], fast[t]);
          if (next && k < rows) m[t] = ck_amax_bits(m[t], w + 4 * (k * columns + j0), width[t]);
          // Two bands ahead, into the outer caches. A prefetch never faults, so
          // the address (an integer, possibly past the end) needs no check.
          uintptr_t ahead = (uintptr_t)weights + 4 * ((k + block_rows) * columns + j0);
          for (size_t x = 0; x < 4 * width[t]; x += 64) _mm_prefetch((const char *)(ahead + x), _MM_HINT_T2);
        }
      }
    }
  }
  return non_finite;
}

CK_TARGET
void ck_narrow_errors(const float *exact, const uint16_t *narrow, size_t n, int format, ck_error_stats *stats) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  const __m512i inf_bits = _mm512_set1_epi32(0x7F800000);
  __m512 max_abs = _mm512_set1_ps(stats->max_abs);
  __m512 max_rel = _mm512_set1_ps(stats->max_rel);
  uint64_t inexact = 0, overflow = 0;
  size_t i = 0;
  for (; i < n; i += 16) {
    __mmask16 live = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512i xb = _mm512_maskz_loadu_epi32(live, exact + i);
    __m256i h = _mm256_maskz_loadu_epi16(live, narrow + i);
    __m512i yb = format == CK_OUT_BF16 ? _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16) : _mm512_castps_si512(_mm512_cvtph_ps(h));
    __m512i xa = _mm512_and_si512(xb, abs_mask);
    __m512i ya = _mm512_and_si512(yb, abs_mask);
    __mmask16 x_nan = _mm512_cmpgt_epu32_mask(xa, inf_bits);
    __mmask16 y_nan = _mm512_cmpgt_epu32_mask(ya, inf_bits);
    __mmask16 differ = _mm512_mask_cmpneq_epu32_mask(live, xb, yb) & (__mmask16) ~(x_nan & y_nan);
    if (!differ) continue;
    __mmask16 x_fin = _mm512_cmplt_epu32_mask(xa, inf_bits);
    __mmask16 y_fin = _mm512_cmplt_epu32_mask(ya, inf_bits);
    __mmask16 over = differ & x_fin & (__mmask16)~y_fin;
    __mmask16 inex = differ & (__mmask16)~over;
    overflow += (uint64_t)__builtin_popcount(over);
    inexact += (uint64_t)__builtin_popcount(inex);
    __m512 x = _mm512_castsi512_ps(xb);
    __m512 d = _mm512_abs_ps(_mm512_sub_ps(_mm512_castsi512_ps(yb), x));
    __mmask16 d_ok = inex & _mm512_cmp_ps_mask(d, d, _CMP_ORD_Q);
    max_abs = _mm512_mask_max_ps(max_abs, d_ok & _mm512_cmp_ps_mask(d, max_abs, _CMP_GT_OQ), d, max_abs);
    __mmask16 r_ok = d_ok & _mm512_test_epi32_mask(xa, xa);
    __m512 r = _mm512_maskz_div_ps(r_ok, d, _mm512_castsi512_ps(xa));
    max_rel = _mm512_mask_max_ps(max_rel, r_ok & _mm512_cmp_ps_mask(r, max_rel, _CMP_GT_OQ), r, max_rel);
  }
  stats->inexact += inexact;
  stats->overflow += overflow;
  stats->max_abs = _mm512_reduce_max_ps(max_abs);
  stats->max_rel = _mm512_reduce_max_ps(max_rel);
}

#else

int ck_avx512_available(void) { return 0; }

void ck_narrow_errors(const float *exact, const uint16_t *narrow, size_t n, int format, ck_error_stats *stats) {
  (void)exact, (void)narrow, (void)n, (void)format, (void)stats;
}

size_t ck_int4_groups_bf16_scale(
  const uint8_t *src, void *dst, size_t groups, size_t chunks, const void *scales,
  const int8_t *zero_points, int out_type, uint64_t *inexact) {
  (void)src, (void)dst, (void)groups, (void)chunks, (void)scales, (void)zero_points, (void)out_type, (void)inexact;
  return 0;
}

size_t ck_fp8_block_quantize_bands(
  const float *weights, size_t rows, size_t columns, size_t block_rows, size_t block_columns, size_t band_begin,
  size_t band_end, uint8_t *codes, float *scales) {
  (void)weights, (void)rows, (void)columns, (void)block_rows, (void)block_columns, (void)band_begin, (void)band_end;
  (void)codes, (void)scales;
  return 0;
}

#endif
