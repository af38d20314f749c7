// Comparison statistics of two FP32 arrays: the fast twin of Swift's
// `ErrorStats.reference` (QuantKernels/ErrorStats.swift), which is the contract.
//
// Per element pair: equal bits count as identical; a pair with a non-finite
// side is counted and left out of everything else; otherwise the difference
// d = (double)a - (double)b enters the double-precision sums, the running
// maximum of |d| (first index on ties) and the histogram of binary exponents
// of |d|. Counts, maxima, indices and histograms are identical to the
// reference; the sums differ only in the order of additions.
#include "CQuantKernels.h"

#include <math.h>
#include <string.h>

static inline int cmp_bin(double ad) {
  if (ad == 0) return 0;
  uint64_t bits;
  memcpy(&bits, &ad, 8);
  int e = (int)((bits >> 52) & 0x7FF) - 1023;
  if (e < CK_CMP_MIN_EXP) return 1;
  if (e > CK_CMP_MAX_EXP) return CK_CMP_BINS - 1;
  return 2 + (e - CK_CMP_MIN_EXP);
}

static void cmp_scalar(const float *a, const float *b, size_t n, int64_t base, ck_cmp_stats *s) {
  for (size_t i = 0; i < n; i++) {
    float x = a[i], y = b[i];
    uint32_t xb, yb;
    memcpy(&xb, &x, 4);
    memcpy(&yb, &y, 4);
    if (xb == yb) s->identical++;
    int xf = isfinite(x), yf = isfinite(y);
    if (!xf || !yf) {
      s->nonfinite_a += !xf;
      s->nonfinite_b += !yf;
      s->nonfinite_pairs++;
      s->nonfinite_differ += xb != yb;
      continue;
    }
    double dx = x, dy = y, d = dx - dy, ad = fabs(d);
    s->count++;
    s->sum_dd += d * d;
    s->sum_aa += dx * dx;
    s->sum_bb += dy * dy;
    s->sum_ab += dx * dy;
    if (ad > s->max_abs) {
      s->max_abs = ad;
      s->max_index = base + (int64_t)i;
    }
    s->hist[cmp_bin(ad)]++;
  }
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

#define CMP_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,popcnt")))

/// Eight lanes of doubles: sums, per-lane maximum with its first index, and
/// lane-private histogram counters (so a scatter never meets a conflict).
CMP_TARGET static inline void cmp_half(
  __m512d da, __m512d db, __mmask8 ok, __m512i idx, __m512d *dd, __m512d *aa, __m512d *bb, __m512d *ab,
  __m512d *vmax, __m512i *vidx, int64_t *hist, __m512i lane) {
  __m512d d = _mm512_sub_pd(da, db);
  *dd = _mm512_fmadd_pd(d, d, *dd);
  *aa = _mm512_fmadd_pd(da, da, *aa);
  *bb = _mm512_fmadd_pd(db, db, *bb);
  *ab = _mm512_fmadd_pd(da, db, *ab);
  __m512d ad = _mm512_abs_pd(d);
  __mmask8 gt = _mm512_cmp_pd_mask(ad, *vmax, _CMP_GT_OQ);
  *vmax = _mm512_mask_mov_pd(*vmax, gt, ad);
  *vidx = _mm512_mask_mov_epi64(*vidx, gt, idx);
  // Bin of |d|: 0 for zero, else from the exponent field (finite, never subnormal as a double).
  // Zeros (bin 0) are counted by the caller from the float comparison.
  __mmask8 nz = ok & _mm512_cmp_pd_mask(ad, _mm512_setzero_pd(), _CMP_NEQ_OQ);
  if (!nz) return;
  __m512i e = _mm512_sub_epi64(_mm512_srli_epi64(_mm512_castpd_si512(ad), 52), _mm512_set1_epi64(1023));
  __m512i bin = _mm512_add_epi64(_mm512_sub_epi64(e, _mm512_set1_epi64(CK_CMP_MIN_EXP)), _mm512_set1_epi64(2));
  bin = _mm512_max_epi64(bin, _mm512_set1_epi64(1));
  bin = _mm512_min_epi64(bin, _mm512_set1_epi64(CK_CMP_BINS - 1));
  __m512i slot = _mm512_add_epi64(_mm512_slli_epi64(bin, 3), lane);
  __m512i c = _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), nz, slot, hist, 8);
  c = _mm512_add_epi64(c, _mm512_set1_epi64(1));
  _mm512_mask_i64scatter_epi64(hist, nz, slot, c, 8);
}

CMP_TARGET static void cmp_avx512(const float *a, const float *b, size_t n, int64_t base, ck_cmp_stats *s) {
  int64_t hist[CK_CMP_BINS * 8];
  memset(hist, 0, sizeof hist);
  __m512d dd = _mm512_setzero_pd(), aa = dd, bb = dd, ab = dd, vmax0 = dd, vmax1 = dd;
  __m512i vidx0 = _mm512_set1_epi64(-1), vidx1 = vidx0;
  const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i exp_mask = _mm512_set1_epi32(0x7F800000);
  uint64_t identical = 0, nfa = 0, nfb = 0, nfp = 0, nfd = 0, count = 0, zeros = 0;
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 live = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512i xb = _mm512_maskz_loadu_epi32(live, a + i);
    __m512i yb = _mm512_maskz_loadu_epi32(live, b + i);
    __mmask16 same = _mm512_mask_cmpeq_epi32_mask(live, xb, yb);
    identical += (uint64_t)__builtin_popcount(same);
    __mmask16 xnf = live & _mm512_cmpeq_epi32_mask(_mm512_and_si512(xb, exp_mask), exp_mask);
    __mmask16 ynf = live & _mm512_cmpeq_epi32_mask(_mm512_and_si512(yb, exp_mask), exp_mask);
    nfa += (uint64_t)__builtin_popcount(xnf);
    nfb += (uint64_t)__builtin_popcount(ynf);
    __mmask16 ok = live & (__mmask16)~(xnf | ynf);
    nfp += (uint64_t)__builtin_popcount(xnf | ynf);
    nfd += (uint64_t)__builtin_popcount((xnf | ynf) & (__mmask16)~same);
    count += (uint64_t)__builtin_popcount(ok);
    __m512 x = _mm512_castsi512_ps(xb), y = _mm512_castsi512_ps(yb);
    zeros += (uint64_t)__builtin_popcount(_mm512_mask_cmp_ps_mask(ok, x, y, _CMP_EQ_OQ));
    __mmask8 ok0 = (__mmask8)ok, ok1 = (__mmask8)(ok >> 8);
    __m512i idx0 = _mm512_add_epi64(_mm512_set1_epi64(base + (int64_t)i), lane);
    __m512i idx1 = _mm512_add_epi64(idx0, _mm512_set1_epi64(8));
    __m512d da0 = _mm512_maskz_cvtps_pd(ok0, _mm512_castps512_ps256(x));
    __m512d db0 = _mm512_maskz_cvtps_pd(ok0, _mm512_castps512_ps256(y));
    __m512d da1 = _mm512_maskz_cvtps_pd(ok1, _mm512_extractf32x8_ps(x, 1));
    __m512d db1 = _mm512_maskz_cvtps_pd(ok1, _mm512_extractf32x8_ps(y, 1));
    cmp_half(da0, db0, ok0, idx0, &dd, &aa, &bb, &ab, &vmax0, &vidx0, hist, lane);
    cmp_half(da1, db1, ok1, idx1, &dd, &aa, &bb, &ab, &vmax1, &vidx1, hist, lane);
  }
  s->identical += identical;
  s->nonfinite_a += nfa;
  s->nonfinite_b += nfb;
  s->nonfinite_pairs += nfp;
  s->nonfinite_differ += nfd;
  s->count += count;
  s->sum_dd += _mm512_reduce_add_pd(dd);
  s->sum_aa += _mm512_reduce_add_pd(aa);
  s->sum_bb += _mm512_reduce_add_pd(bb);
  s->sum_ab += _mm512_reduce_add_pd(ab);
  s->hist[0] += zeros;
  for (int k = 1; k < CK_CMP_BINS; k++)
    for (int l = 0; l < 8; l++) s->hist[k] += (uint64_t)hist[k * 8 + l];
  double lanes_max[16];
  int64_t lanes_idx[16];
  _mm512_storeu_pd(lanes_max, vmax0);
  _mm512_storeu_pd(lanes_max + 8, vmax1);
  _mm512_storeu_si512(lanes_idx, vidx0);
  _mm512_storeu_si512(lanes_idx + 8, vidx1);
  for (int l = 0; l < 16; l++) {
    if (lanes_max[l] > s->max_abs || (lanes_max[l] == s->max_abs && lanes_max[l] > 0 && lanes_idx[l] < s->max_index)) {
      s->max_abs = lanes_max[l];
      s->max_index = lanes_idx[l];
    }
  }
}
#endif

void ck_compare_f32(const float *a, const float *b, size_t n, int64_t base, int use_avx512, ck_cmp_stats *s) {
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
  if (use_avx512 && ck_avx512_available()) {
    cmp_avx512(a, b, n, base, s);
    return;
  }
#endif
  (void)use_avx512;
  cmp_scalar(a, b, n, base, s);
}
