// INT4 requantization with exact grid recovery: the fast twin of Swift's
// `Int4Requantize.groupReference` / `matrixReference` for BF16 scales.
//
// Plain C (no intrinsics): the same body is compiled twice, once for baseline
// x86-64 and once with AVX-512 enabled by a target attribute, where the
// compiler vectorizes the 32-element loops. Arithmetic is IEEE (no fast-math)
// and follows the reference operation by operation, so codes and scales are
// bit-identical to it; only the order of the error sums differs.
//
// Fast path: try the rule's first choice of largest code (7, then 8 when the
// largest magnitude is negative) with the five BF16 scales nearest m / k. If
// exactly those pairs reproduce the group, and the screen below proves that no
// pair with another largest code can, the answer is the reference's. Every
// other group takes the slow path, which is the reference's full search.
//
// The screen: suppose (s, q) reproduces a group whose values are all in the
// normal range, with largest code k, and (s', q') another pair with largest
// code k'. BF16 rounding moves each value by at most 2^-8 relative, so
// q'_i = q_i·k'/k·(1 ± 2^-6) and |q'_i| <= 8: q_i·k'/k lies within 0.126 of an
// integer for every i. `allowed[k'][|q|]` marks the codes within 0.2 (a
// margin); a group whose codes are all allowed for some k' goes the slow way.
#include "CQuantKernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define CK_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define CK_HAVE_AVX512_CLONE 1
#else
#define CK_HAVE_AVX512_CLONE 0
#endif

#define CK_INLINE static inline __attribute__((always_inline))

CK_INLINE uint32_t rq_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  return b;
}

CK_INLINE float rq_float(uint32_t b) {
  float f;
  memcpy(&f, &b, 4);
  return f;
}

/// Swift's `BFloat16.encode` for non-NaN input.
CK_INLINE uint32_t rq_bf16(float f) {
  uint32_t b = rq_bits(f);
  return (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
}

CK_INLINE float rq_bf16_value(uint32_t h) { return rq_float(h << 16); }

/// Swift's `Float16Bits.encode` for non-NaN input.
CK_INLINE uint32_t rq_f16(float f) {
  uint32_t b = rq_bits(f);
  uint32_t sign = (b >> 16) & 0x8000u;
  uint32_t a = b & 0x7FFFFFFFu;
  if (a >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520: inf
  if (a >= 0x38800000u) {                        // normal binary16
    uint32_t m = a - (112u << 23);
    m = m + 0xFFFu + ((m >> 13) & 1u);
    return sign | (m >> 13);
  }
  // Subnormal (or rounding up to the smallest normal): |f| * 2^24 is exact.
  return sign | (uint32_t)rintf(fabsf(f) * 16777216.0f);
}

CK_INLINE float rq_f16_value(uint32_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0) {
    float v = (float)m * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (e == 31) return rq_float(sign | 0x7F800000u | (m << 13));
  return rq_float(sign | ((e + 112u) << 23) | (m << 13));
}

/// `ckpt convert`'s output bits for code q and BF16 scale value s.
CK_INLINE uint32_t rq_deq(int q, float s, int in_type) {
  float p = (float)q * s;
  if (in_type == CK_OUT_BF16) return rq_bf16(p);
  if (in_type == CK_OUT_F16) return rq_f16(p);
  return rq_bits(p);
}

CK_INLINE float rq_in_value(uint32_t b, int in_type) {
  if (in_type == CK_OUT_BF16) return rq_bf16_value(b);
  if (in_type == CK_OUT_F16) return rq_f16_value(b);
  return rq_float(b);
}

CK_INLINE int rq_clamp(int q, int lo, int hi) { return q < lo ? lo : q > hi ? hi : q; }

typedef struct {
  int in_type, rule;
  size_t g;
  uint16_t allowed[9][2];  // [k'][k index: 0 for 7, 1 for 8]: bit |q| allowed
  uint32_t zero_scale;
} rq_ctx;

/// The code of element x nearest x/s among those that reproduce bits b (ties
/// to even); -128 when none does.
CK_INLINE int rq_code_exact(float x, uint32_t b, float s, int in_type) {
  double t = (double)x / (double)s;
  int q0 = rq_clamp((int)nearbyint(t), -8, 7);
  if (rq_deq(q0, s, in_type) == b) return q0;
  int best = -128;
  double bd = 0;
  for (int q = -8; q <= 7; q++) {
    if (rq_deq(q, s, in_type) != b) continue;
    double d = fabs((double)q - t);
    if (best == -128 || d < bd || (d == bd && q % 2 == 0)) {
      best = q;
      bd = d;
    }
  }
  return best;
}

/// Codes reproducing the group with scale bits s (1), or 0.
CK_INLINE int rq_exact_codes(const rq_ctx *c, const float *x, const uint32_t *xb, uint32_t sbits, int8_t *codes) {
  float s = rq_bf16_value(sbits);
  if (!(s > 0) || !isfinite(s)) return 0;
  size_t g = c->g;
  for (size_t i = 0; i < g; i++) {
    int q = rq_code_exact(x[i], xb[i], s, c->in_type);
    if (q == -128) return 0;
    codes[i] = (int8_t)q;
  }
  return 1;
}

/// Fast check of scale s: reciprocal estimate, verify, exact routine where it misses.
CK_INLINE int rq_try_scale(const rq_ctx *c, const float *x, const uint32_t *xb, uint32_t sbits, int8_t *codes) {
  float s = rq_bf16_value(sbits);
  if (!(s > 0) || !isfinite(s)) return 0;
  float inv = 1.0f / s;
  size_t g = c->g;
  int miss = 0;
  for (size_t i = 0; i < g; i++) {
    float t = rintf(x[i] * inv);
    t = t < -8.0f ? -8.0f : t > 7.0f ? 7.0f : t;
    int q = (int)t;
    codes[i] = (int8_t)q;
    miss |= rq_deq(q, s, c->in_type) != xb[i];
  }
  if (!miss) return 1;
  for (size_t i = 0; i < g; i++) {
    if (rq_deq(codes[i], s, c->in_type) == xb[i]) continue;
    int q = rq_code_exact(x[i], xb[i], s, c->in_type);
    if (q == -128) return 0;
    codes[i] = (int8_t)q;
  }
  return 1;
}

CK_INLINE int rq_rank(int rule, int k) {
  static const int qat7[9] = {99, 6, 5, 4, 3, 2, 1, 0, 7};    // 7,6,5,4,3,2,1,8
  static const int minmax[9] = {99, 7, 6, 5, 4, 3, 2, 0, 1};  // 7,8,6,5,4,3,2,1
  return rule == 0 ? qat7[k] : minmax[k];
}

CK_INLINE int rq_maxabs(const int8_t *codes, size_t g) {
  int k = 0;
  for (size_t i = 0; i < g; i++) {
    int a = codes[i] < 0 ? -codes[i] : codes[i];
    k = a > k ? a : k;
  }
  return k;
}

/// Is (k, s) better than (bk, bs) under the reference's order?
CK_INLINE int rq_better(int rule, float m, int k, uint32_t s, int bk, uint32_t bs) {
  int ra = rq_rank(rule, k), rb = rq_rank(rule, bk);
  if (ra != rb) return ra < rb;
  double da = fabs((double)rq_bf16_value(s) * k - (double)m);
  double db = fabs((double)rq_bf16_value(bs) * bk - (double)m);
  if (da != db) return da < db;
  return s < bs;
}

/// The reference's full search. Returns the number of distinct exact pairs;
/// the chosen one's codes and scale are in codes / *scale.
static size_t rq_search(const rq_ctx *c, const float *x, const uint32_t *xb, float m, int only_negative, int8_t *codes,
                        int8_t *tmp, uint32_t *scale) {
  uint32_t seen[40];
  size_t n = 0;
  int bk = 0;
  for (int k = 1; k <= 8; k++) {
    if (k == 8 && !only_negative) continue;
    int64_t c0 = rq_bf16((float)((double)m / (double)k));
    for (int64_t cc = c0 - 2; cc <= c0 + 2; cc++) {
      if (cc <= 0) continue;
      uint32_t s = (uint32_t)cc;
      int dup = 0;
      for (size_t j = 0; j < n; j++) dup |= seen[j] == s;
      if (dup || !rq_exact_codes(c, x, xb, s, tmp)) continue;
      seen[n++] = s;
      int kk = rq_maxabs(tmp, c->g);
      if (n == 1 || rq_better(c->rule, m, kk, s, bk, *scale)) {
        bk = kk;
        *scale = s;
        memcpy(codes, tmp, c->g);
      }
    }
  }
  return n;
}

/// The rule's codes and scale for an off-grid group (and its MSE search).
CK_INLINE uint32_t rq_rule(const rq_ctx *c, const float *x, float m, int rule, int8_t *codes) {
  size_t g = c->g;
  uint32_t s;
  if (rule == 0) {
    float t = m / 7.0f;
    s = rq_bf16(t > 1e-5f ? t : 1e-5f);
    float sv = rq_bf16_value(s);
    for (size_t i = 0; i < g; i++) {
      float q = rintf(x[i] / sv);
      codes[i] = (int8_t)(q < -7.0f ? -7.0f : q > 7.0f ? 7.0f : q);
    }
  } else {
    s = rq_bf16(m / 7.5f);
    uint32_t floor_bits = rq_bf16(1.1920928955078125e-7f);
    if (rq_bf16_value(s) < rq_bf16_value(floor_bits)) s = floor_bits;
    float sv = rq_bf16_value(s);
    for (size_t i = 0; i < g; i++) {
      float t = rq_bf16_value(rq_bf16(x[i] / sv));
      t = t < -8.0f ? -8.0f : t > 7.0f ? 7.0f : t;
      codes[i] = (int8_t)rintf(t);
    }
  }
  return s;
}

/// The MSE search, starting from the plain rule's codes and scale `s` (kept on
/// ties): the scale-dtype values m/d, d = 7 + j/16, j = 0…24.
CK_INLINE uint32_t rq_mse_search(const rq_ctx *c, const float *x, float m, uint32_t s, int8_t *codes, int8_t *tmp) {
  size_t g = c->g;
  double best = 0;
  {
    double sv = rq_bf16_value(s);
    for (size_t i = 0; i < g; i++) {
      double d = (double)codes[i] * sv - (double)x[i];
      best += d * d;
    }
  }
  for (int j = 0; j <= 24; j++) {
    float dv = 7.0f + (float)j / 16.0f;
    uint32_t cs = rq_bf16(m / dv);
    float cv = rq_bf16_value(cs);
    if (!(cv > 0) || !isfinite(cv)) continue;
    double e = 0;
    for (size_t i = 0; i < g; i++) {
      float q = rintf(x[i] / cv);
      q = q < -8.0f ? -8.0f : q > 7.0f ? 7.0f : q;
      tmp[i] = (int8_t)q;
      double d = (double)q * (double)cv - (double)x[i];
      e += d * d;
    }
    if (e < best) {
      best = e;
      s = cs;
      memcpy(codes, tmp, g);
    }
  }
  return s;
}

/// Σ (out − x)² and max |out − x| of a group, out in the input dtype.
CK_INLINE double rq_group_error(const rq_ctx *c, const float *x, const int8_t *codes, uint32_t s, double *max_abs) {
  float sv = rq_bf16_value(s);
  double e = 0;
  for (size_t i = 0; i < c->g; i++) {
    double d = (double)rq_in_value(rq_deq(codes[i], sv, c->in_type), c->in_type) - (double)x[i];
    e += d * d;
    double a = fabs(d);
    if (a > *max_abs) *max_abs = a;
  }
  return e;
}


#if CK_HAVE_AVX512_CLONE
#include <immintrin.h>

/// The fast path of `rq_rows` for one BF16 group of 32, in registers: the
/// rule's first largest code (7, or 8 when the largest magnitude is negative),
/// five candidate scales, the screen. Returns 1 with the codes in `codes` and
/// the scale in `*scale` when exactly one candidate verifies and no other
/// largest code can; 0 sends the group to the scalar path, which decides it
/// exactly as the reference does. Adds the group's statistics only on 1.
CK_AVX512_TARGET static int rq_group32_bf16(const uint16_t *src, const uint16_t allowed[9][2], int8_t *codes, uint32_t *scale,
                                            ck_requant_stats *st) {
  const __m512i raw = _mm512_loadu_si512(src);
  const __m512i exp = _mm512_set1_epi16(0x7F80);
  if (_mm512_cmpeq_epi16_mask(_mm512_and_si512(raw, exp), exp)) return 0;  // NaN or inf
  const __m512i b0 = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(raw));
  const __m512i b1 = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(raw, 1));
  const __m512 x0 = _mm512_castsi512_ps(_mm512_slli_epi32(b0, 16)), x1 = _mm512_castsi512_ps(_mm512_slli_epi32(b1, 16));
  const __m512 a0 = _mm512_abs_ps(x0), a1 = _mm512_abs_ps(x1);
  const float m = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
  if (!(m >= 1e-35f)) return 0;
  const __m512 mv = _mm512_set1_ps(m);
  const __mmask16 e0 = _mm512_cmp_ps_mask(a0, mv, _CMP_EQ_OQ), e1 = _mm512_cmp_ps_mask(a1, mv, _CMP_EQ_OQ);
  const int imax = e0 ? __builtin_ctz(e0) : 16 + __builtin_ctz(e1);
  const __m512 zero = _mm512_setzero_ps();
  const int only_negative =
    !((e0 & _mm512_cmp_ps_mask(x0, zero, _CMP_GT_OQ)) | (e1 & _mm512_cmp_ps_mask(x1, zero, _CMP_GT_OQ)));
  const uint32_t xmax_bits = src[imax];
  const int negative = (xmax_bits & 0x8000u) != 0;
  const __m512i round_one = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
  for (int ki = 0; ki < 2; ki++) {
    const int k = ki == 0 ? 7 : 8;
    if (k == 8 && !only_negative) return 0;
    const int64_t c0 = rq_bf16((float)((double)m / (double)k));
    int found = 0;
    __m512 q0 = zero, q1 = zero;
    uint32_t best = 0;
    for (int64_t cc = c0 - 2; cc <= c0 + 2; cc++) {
      if (cc <= 0) continue;
      const float sv = rq_bf16_value((uint32_t)cc);
      if (!(sv > 0) || !isfinite(sv)) continue;
      if (rq_bf16((float)(negative ? -k : k) * sv) != xmax_bits) continue;
      const __m512 s = _mm512_set1_ps(sv), inv = _mm512_set1_ps(1.0f / sv);
      const __m512 lo = _mm512_set1_ps(-8.0f), hi = _mm512_set1_ps(7.0f);
      __m512 t0 = _mm512_roundscale_ps(_mm512_mul_ps(x0, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      __m512 t1 = _mm512_roundscale_ps(_mm512_mul_ps(x1, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      // + 0 turns a rounded −0 into +0: the integer code 0 dequantizes to +0,
      // so an input −0 must not verify.
      t0 = _mm512_add_ps(_mm512_min_ps(_mm512_max_ps(t0, lo), hi), zero);
      t1 = _mm512_add_ps(_mm512_min_ps(_mm512_max_ps(t1, lo), hi), zero);
      __m512i p0 = _mm512_castps_si512(_mm512_mul_ps(t0, s)), p1 = _mm512_castps_si512(_mm512_mul_ps(t1, s));
      p0 = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(p0, round_one), _mm512_and_si512(_mm512_srli_epi32(p0, 16), one)), 16);
      p1 = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(p1, round_one), _mm512_and_si512(_mm512_srli_epi32(p1, 16), one)), 16);
      // A miss proves the candidate wrong: in the normal range each element
      // has at most one valid code, and rint(x/s) is within 0.03 of it.
      if ((__mmask16)~_mm512_cmpeq_epi32_mask(p0, b0) || (__mmask16)~_mm512_cmpeq_epi32_mask(p1, b1)) continue;
      if (++found > 1) return 0;  // several exact scales: the scalar path ranks them
      q0 = t0;
      q1 = t1;
      best = (uint32_t)cc;
    }
    if (found == 0) continue;
    const __m512i i0 = _mm512_cvtps_epi32(q0), i1 = _mm512_cvtps_epi32(q1);
    const __m512i n0 = _mm512_abs_epi32(i0), n1 = _mm512_abs_epi32(i1);
    if (_mm512_reduce_max_epi32(_mm512_max_epi32(n0, n1)) != k) return 0;
    const uint32_t present = (uint32_t)_mm512_reduce_or_epi32(
      _mm512_or_si512(_mm512_sllv_epi32(one, n0), _mm512_sllv_epi32(one, n1)));
    for (int kp = 1; kp <= 8; kp++) {
      if (kp != k && (present & ~(uint32_t)allowed[kp][ki]) == 0) return 0;
    }
    _mm_storeu_si128((__m128i *)codes, _mm512_cvtepi32_epi8(i0));
    _mm_storeu_si128((__m128i *)(codes + 16), _mm512_cvtepi32_epi8(i1));
    *scale = best;
    st->groups++;
    st->recovered++;
    st->maxq_hist[k]++;
    const __m512i m8 = _mm512_set1_epi32(-8);
    st->minus8_groups += (_mm512_cmpeq_epi32_mask(i0, m8) | _mm512_cmpeq_epi32_mask(i1, m8)) != 0;
    for (int v = -8; v <= 7; v++) {
      const __m512i vv = _mm512_set1_epi32(v);
      st->code_hist[v + 8] += (uint64_t)(__builtin_popcount(_mm512_cmpeq_epi32_mask(i0, vv)) +
                                         __builtin_popcount(_mm512_cmpeq_epi32_mask(i1, vv)));
    }
    __m512d acc = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x0)), _mm512_cvtps_pd(_mm512_castps512_ps256(x0)));
    __m256 h = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x0), 1));
    acc = _mm512_fmadd_pd(_mm512_cvtps_pd(h), _mm512_cvtps_pd(h), acc);
    acc = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x1)), _mm512_cvtps_pd(_mm512_castps512_ps256(x1)), acc);
    h = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x1), 1));
    acc = _mm512_fmadd_pd(_mm512_cvtps_pd(h), _mm512_cvtps_pd(h), acc);
    st->ssq_input += _mm512_reduce_add_pd(acc);
    return 1;
  }
  return 0;
}

/// Packs a row of codes (columns a multiple of 32) 32 at a time.
CK_AVX512_TARGET static void rq_pack_row32(const int8_t *row, size_t columns, uint8_t *out) {
  const __m256i eight = _mm256_set1_epi8(8), weights = _mm256_set1_epi16(0x1001);
  for (size_t j = 0; j < columns; j += 32) {
    __m256i n = _mm256_add_epi8(_mm256_loadu_si256((const __m256i *)(row + j)), eight);
    __m256i pairs = _mm256_maddubs_epi16(n, weights);  // n[2k] + 16 n[2k+1]
    _mm_storeu_si128((__m128i *)(out + j / 2), _mm256_cvtepi16_epi8(pairs));
  }
}
#endif

CK_INLINE void rq_rows(const void *input, int in_type, size_t rows, size_t columns, size_t g, int rule, int mse,
                       uint8_t *packed, uint16_t *scales, ck_requant_stats *st, int avx512) {
  rq_ctx c;
  c.in_type = in_type;
  c.rule = rule;
  c.g = g;
  c.zero_scale = rule == 0 ? rq_bf16(1e-5f) : rq_bf16(1.1920928955078125e-7f);
  for (int kp = 0; kp <= 8; kp++) {
    for (int ki = 0; ki < 2; ki++) {
      int k = ki == 0 ? 7 : 8;
      uint16_t mask = 0;
      for (int q = 0; q <= 8; q++) {
        double v = (double)q * kp / k;
        if (fabs(v - nearbyint(v)) <= 0.2 && v <= 8.2) mask |= (uint16_t)(1u << q);
      }
      c.allowed[kp][ki] = mask;
    }
  }
  // Values below which rounding is no longer relative (subnormal outputs).
  const float normal_floor = in_type == CK_OUT_F16 ? 4.8828125e-4f : 1e-35f;
  const size_t groups = columns / g;
  const size_t row_bytes = 4 * ((columns + 7) / 8);
  float *x = malloc(sizeof(float) * g);
  uint32_t *xb = malloc(sizeof(uint32_t) * g);
  int8_t *codes = malloc(g), *tmp = malloc(g);
  int8_t *row = malloc(columns);
  memset(st, 0, sizeof *st);
  for (size_t r = 0; r < rows; r++) {
    for (size_t gi = 0; gi < groups; gi++) {
      size_t base = r * columns + gi * g;
#if CK_HAVE_AVX512_CLONE
      if (avx512 && in_type == CK_OUT_BF16 && g == 32) {
        uint32_t sc;
        if (rq_group32_bf16((const uint16_t *)input + base, (const uint16_t (*)[2])c.allowed, row + gi * g, &sc, st)) {
          scales[r * groups + gi] = (uint16_t)sc;
          continue;
        }
      }
#endif
      if (in_type == CK_OUT_F32) {
        const uint32_t *p = (const uint32_t *)input + base;
        for (size_t i = 0; i < g; i++) xb[i] = p[i];
      } else {
        const uint16_t *p = (const uint16_t *)input + base;
        for (size_t i = 0; i < g; i++) xb[i] = p[i];
      }
      float m = 0;
      int nonfinite = 0, any_negative_zero = 0;
      size_t imax = 0;
      double acc[4] = {0, 0, 0, 0};
      for (size_t i = 0; i < g; i++) {
        float v = rq_in_value(xb[i], in_type);
        x[i] = v;
        nonfinite += !isfinite(v);
        acc[i & 3] += (double)v * (double)v;
      }
      for (size_t i = 0; i < g; i++) {
        float a = fabsf(x[i]);
        if (a > m) {
          m = a;
          imax = i;
        }
      }
      double ssq = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      st->groups++;
      uint32_t scale = 0;
      int outcome;  // 0 recovered, 1 ambiguous, 2 requantized
      size_t pairs = 0;
      if (nonfinite) {
        st->non_finite += (uint64_t)nonfinite;
        st->requantized++;
        memset(codes, 0, g);
        scale = c.zero_scale;
        memcpy(row + gi * g, codes, g);
        scales[r * groups + gi] = (uint16_t)scale;
        continue;
      }
      st->ssq_input += ssq;
      if (m == 0) {
        for (size_t i = 0; i < g; i++) any_negative_zero |= signbit(x[i]) != 0;
      }
      if (m == 0 && !any_negative_zero) {
        memset(codes, 0, g);
        scale = c.zero_scale;
        outcome = 1;
        st->zero_groups++;
      } else {
        int only_negative = 1;
        for (size_t i = 0; i < g; i++) only_negative &= !(fabsf(x[i]) == m && x[i] > 0);
        int fast = 0;
        if (m > 0 && m >= normal_floor && (in_type != CK_OUT_F16 || m <= 60000.0f)) {
          for (int ki = 0; ki < 2 && !fast; ki++) {
            int k = ki == 0 ? 7 : 8;
            if (k == 8 && !only_negative) break;
            int64_t c0 = rq_bf16((float)((double)m / (double)k));
            size_t found = 0;
            int bk = 0;
            // In the normal range the largest element can only take code ±k:
            // one product rejects a wrong scale before the group is checked.
            const int qmax = x[imax] < 0 ? -k : k;
            for (int64_t cc = c0 - 2; cc <= c0 + 2; cc++) {
              if (cc <= 0) continue;
              if (rq_deq(qmax, rq_bf16_value((uint32_t)cc), in_type) != xb[imax]) continue;
              if (!rq_try_scale(&c, x, xb, (uint32_t)cc, tmp)) continue;
              int kk = rq_maxabs(tmp, g);
              if (found == 0 || rq_better(rule, m, kk, (uint32_t)cc, bk, scale)) {
                bk = kk;
                scale = (uint32_t)cc;
                memcpy(codes, tmp, g);
              }
              found++;
            }
            if (found == 0) continue;
            if (bk != k) break;  // unexpected largest code: let the full search decide
            uint16_t present = 0;
            for (size_t i = 0; i < g; i++) present |= (uint16_t)(1u << (codes[i] < 0 ? -codes[i] : codes[i]));
            int alternative = 0;
            for (int kp = 1; kp <= 8; kp++) {
              if (kp != k && (present & ~c.allowed[kp][ki]) == 0) alternative = 1;
            }
            if (alternative) break;
            fast = 1;
            pairs = found;
          }
        }
        if (!fast) pairs = m > 0 ? rq_search(&c, x, xb, m, only_negative, codes, tmp, &scale) : 0;
        if (pairs == 0) {
          scale = rq_rule(&c, x, m, rule, codes);
          outcome = 2;
          double mx = st->max_abs;
          double e = rq_group_error(&c, x, codes, scale, &mx);
          if (mse) {
            // The plain rule's error is the baseline the search is reported against.
            st->plain_sse += e;
            scale = rq_mse_search(&c, x, m, scale, codes, tmp);
            mx = st->max_abs;
            e = rq_group_error(&c, x, codes, scale, &mx);
          } else {
            st->plain_sse += e;
          }
          st->max_abs = mx;
          st->sse += e;
          st->searched_sse += e;
        } else {
          outcome = pairs == 1 ? 0 : 1;
        }
      }
      if (outcome == 0) {
        st->recovered++;
        int k = rq_maxabs(codes, g);
        st->maxq_hist[k]++;
        int has8 = 0;
        for (size_t i = 0; i < g; i++) has8 |= codes[i] == -8;
        st->minus8_groups += (uint64_t)has8;
      } else if (outcome == 1) {
        st->ambiguous++;
      } else {
        st->requantized++;
      }
      if (outcome != 2) {
        for (size_t i = 0; i < g; i++) st->code_hist[codes[i] + 8]++;
      }
      memcpy(row + gi * g, codes, g);
      scales[r * groups + gi] = (uint16_t)scale;
    }
    uint8_t *out = packed + r * row_bytes;
#if CK_HAVE_AVX512_CLONE
    if (avx512 && columns % 32 == 0) {
      rq_pack_row32(row, columns, out);
      continue;
    }
#endif
    memset(out, 0, row_bytes);
    for (size_t j = 0; j < columns; j++) {
      uint8_t nib = (uint8_t)(row[j] + 8);
      out[j / 2] |= (uint8_t)(j % 2 ? nib << 4 : nib);
    }
  }
  free(x);
  free(xb);
  free(codes);
  free(tmp);
  free(row);
}

static void rq_rows_portable(const void *input, int in_type, size_t rows, size_t columns, size_t g, int rule, int mse,
                             uint8_t *packed, uint16_t *scales, ck_requant_stats *st) {
  rq_rows(input, in_type, rows, columns, g, rule, mse, packed, scales, st, 0);
}

#if CK_HAVE_AVX512_CLONE
CK_AVX512_TARGET static void rq_rows_avx512(const void *input, int in_type, size_t rows, size_t columns, size_t g, int rule,
                                            int mse, uint8_t *packed, uint16_t *scales, ck_requant_stats *st) {
  rq_rows(input, in_type, rows, columns, g, rule, mse, packed, scales, st, 1);
}
#endif

void ck_int4_requantize_rows(const void *input, int in_type, size_t rows, size_t columns, size_t group_size, int rule,
                             int mse, void *packed, void *scales, int use_avx512, ck_requant_stats *stats) {
#if CK_HAVE_AVX512_CLONE
  if (use_avx512) {
    rq_rows_avx512(input, in_type, rows, columns, group_size, rule, mse, packed, scales, stats);
    return;
  }
#endif
  (void)use_avx512;
  rq_rows_portable(input, in_type, rows, columns, group_size, rule, mse, packed, scales, stats);
}
