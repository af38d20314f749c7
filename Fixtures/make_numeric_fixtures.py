#!/usr/bin/env python3
"""Generate the numeric fixtures under Fixtures/numerics/ (format: Docs/NUMERIC-FIXTURES.md).

Usage:  python3 Fixtures/make_numeric_fixtures.py [--exhaustive]

Deterministic: the encode streams come from SplitMix64 (seed 0x5EED0001), every random tensor
from a torch.Generator seeded with sha256("numerics/<case>/<tensor>"), JSON is written with
fixed key order and safetensors files by safetensors.torch.save_file(..., metadata={"format":
"pt"}). Two runs give byte-identical files (with the same torch version).

Needs: torch, numpy, ml_dtypes, safetensors, compressed-tensors 0.12.2.

Outputs (all in Fixtures/numerics/; the directory is deleted and rewritten):

  decode-bf16.u32, decode-f16.u32           65,536 x u32 LE (FP32 bits of each 16-bit pattern)
  decode-f8e4m3fn.u32, decode-f8e5m2.u32,
  decode-f8e8m0.u32                         256 x u32 LE
  encode-<target>.sha256, encode-<target>.head, encode-special.json
                                            targets bf16 f16 f8e4m3fn f8e5m2 f8e8m0
  int4-pack.safetensors                     pack_to_int32 / unpack_from_int32 cases
  int4-dequant.safetensors                  compressed-tensors dequantize cases, [16, 128]
  int4-k2row.safetensors                    one K2 gate_proj-like [8, 7168] group-32 case
  fp8-block-cases.safetensors               DeepSeek-V3 style FP8 block quantization cases

Tensor names and meanings are listed in Docs/NUMERIC-FIXTURES.md ("INT4 cases", "FP8 block
cases"). The encode policy of each target is in the same document ("Encode policy per target");
`policy_encode` below is an independent implementation of that text, and the script asserts
that it equals the library reference on every generated input.

--exhaustive additionally checks policy_encode against the libraries on all 2^32 FP32 bit
patterns (slow: about 20 minutes; writes nothing extra).
"""

import ml_dtypes  # noqa: F401  (import before safetensors.numpy)

import hashlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

import safetensors.torch
import compressed_tensors
from compressed_tensors.compressors.quantized_compressors.pack_quantized import (
    pack_to_int32,
    unpack_from_int32,
)
from compressed_tensors.quantization import QuantizationArgs
from compressed_tensors.quantization.lifecycle.forward import dequantize

warnings.simplefilter("ignore", RuntimeWarning)  # numpy "invalid value in cast" on NaN/inf

HERE = Path(__file__).resolve().parent
OUT = HERE / "numerics"
MASK64 = 0xFFFFFFFFFFFFFFFF
SEED = 0x5EED0001
N_STREAM = 1_000_000
N_HEAD = 8192
TARGETS = ["bf16", "f16", "f8e4m3fn", "f8e5m2", "f8e8m0"]

NOTES = []  # library disagreements and other findings, printed in the summary


def note(msg):
    NOTES.append(msg)


def check(cond, msg):
    if not cond:
        raise SystemExit("FIXTURE CHECK FAILED: " + msg)


# ---------------------------------------------------------------------------------------------
# SplitMix64 and the seeded FP32 stream (Docs/NUMERIC-FIXTURES.md)
# ---------------------------------------------------------------------------------------------

class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def seeded_stream(seed, n):
    rng = SplitMix64(seed)
    out = np.empty(n, dtype=np.uint32)
    for i in range(n):
        a = rng.next()
        b = rng.next()
        if a & 1 == 0:
            bits = (b >> 32) & 0xFFFFFFFF
        else:
            sign = (b >> 63) & 1
            exp = 107 + ((a >> 1) % 41)
            mant = b & 0x7FFFFF
            bits = (sign << 31) | (exp << 23) | mant
        out[i] = bits
    return out


# ---------------------------------------------------------------------------------------------
# Encode: the documented policy (independent implementation) and the library references
# ---------------------------------------------------------------------------------------------

def _rne_code(bits, m, bias):
    """Finite, non-negative FP32 patterns -> unsigned code of a binary format with `m` mantissa
    bits and exponent bias `bias`, with subnormals, round to nearest even, exponent unbounded
    (the caller handles overflow). float64 holds every FP32 value and every scaled quotient
    exactly, and np.rint rounds half to even."""
    v = bits.view(np.float32).astype(np.float64)
    emin = 1 - bias
    _, ex = np.frexp(v)
    e = (ex - 1).astype(np.int64)  # floor(log2 v) for v > 0
    sub = v < 2.0 ** emin
    qexp = np.where(sub, emin - m, e - m)
    n = np.rint(np.ldexp(v, (-qexp).astype(np.int32))).astype(np.int64)
    return np.where(sub, n, ((e + bias) << m) + (n - (1 << m)))


def policy_encode(bits, target):
    """Docs/NUMERIC-FIXTURES.md "Encode policy per target", written out."""
    bits = np.asarray(bits, dtype=np.uint32)
    sign = (bits >> 31).astype(np.int64)
    a = bits & np.uint32(0x7FFFFFFF)
    isnan = a > 0x7F800000
    isinf = a == 0x7F800000
    finite = np.where(isnan | isinf, np.uint32(0), a).astype(np.uint32)
    if target == "bf16":
        c = np.minimum(_rne_code(finite, 7, 127), 0x7F80)
        c = np.where(isinf, 0x7F80, c) | (sign << 15)
        return np.where(isnan, 0x7FC0, c).astype(np.uint16)
    if target == "f16":
        c = np.minimum(_rne_code(finite, 10, 15), 0x7C00)
        c = np.where(isinf, 0x7C00, c) | (sign << 15)
        nan_code = (sign << 15) | 0x7E00 | ((a.astype(np.int64) >> 13) & 0x3FF)
        return np.where(isnan, nan_code, c).astype(np.uint16)
    if target == "f8e4m3fn":
        big = finite.view(np.float32) > np.float32(448.0)
        clamped = np.where(big, np.float32(448.0).view(np.uint32), finite).astype(np.uint32)
        c = _rne_code(clamped, 3, 7)
        c = np.where(isinf, 0x7E, c) | (sign << 7)
        return np.where(isnan, 0x7F | (sign << 7), c).astype(np.uint8)
    if target == "f8e5m2":
        c = np.minimum(_rne_code(finite, 2, 15), 0x7C)
        c = np.where(isinf, 0x7C, c) | (sign << 7)
        return np.where(isnan, 0x7E | (sign << 7), c).astype(np.uint8)
    if target == "f8e8m0":
        e = (a >> 23).astype(np.int64)
        m = (a & np.uint32(0x7FFFFF)).astype(np.int64)
        c = np.where(e == 0, (m > 0x400000).astype(np.int64), e + (m >= 0x400000))
        c = np.minimum(c, 0xFF)
        invalid = (sign == 1) | (a == 0) | isnan | isinf
        return np.where(invalid, 0xFF, c).astype(np.uint8)
    raise ValueError(target)


def _t(bits):
    return torch.from_numpy(np.ascontiguousarray(bits, dtype=np.uint32).view(np.float32))


def _u16(t):
    return t.contiguous().view(torch.int16).numpy().view(np.uint16)


def _u8(t):
    return t.contiguous().view(torch.uint8).numpy()


def reference_encode(bits, target):
    """The library reference of each target, with the documented NaN rule applied where the
    libraries disagree among themselves (see the doc). Returns (codes, cross-check dict)."""
    bits = np.ascontiguousarray(bits, dtype=np.uint32)
    f = bits.view(np.float32)
    isnan = (bits & 0x7FFFFFFF) > 0x7F800000
    xc = {}
    if target == "bf16":
        ref = _u16(_t(bits).to(torch.bfloat16)).copy()
        xc["torch_nan_codes"] = sorted({int(x) for x in ref[isnan]})
        ref[isnan] = 0x7FC0  # c10::BFloat16 round_to_nearest_even (scalar path)
        ml = f.astype(ml_dtypes.bfloat16).view(np.uint16)
        xc["ml_dtypes_diff_nonnan"] = int((ml != ref)[~isnan].sum())
        xc["ml_dtypes_diff_nan"] = int((ml != ref)[isnan].sum())
        return ref, xc
    if target == "f16":
        ref = _u16(_t(bits).to(torch.float16)).copy()
        npy = f.astype(np.float16).view(np.uint16)
        xc["numpy_diff_nonnan"] = int((npy != ref)[~isnan].sum())
        xc["numpy_diff_nan"] = int((npy != ref)[isnan].sum())
        return ref, xc
    if target == "f8e4m3fn":
        clamped = torch.clamp(_t(bits), -448.0, 448.0)
        ref = _u8(clamped.to(torch.float8_e4m3fn)).copy()
        ml = clamped.numpy().astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
        xc["ml_dtypes_clamped_diff"] = int((ml != ref).sum())
        raw_t = _u8(_t(bits).to(torch.float8_e4m3fn))
        raw_m = f.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
        xc["torch_unclamped_diff"] = int((raw_t != ref).sum())
        xc["ml_dtypes_unclamped_diff"] = int((raw_m != ref).sum())
        return ref, xc
    if target == "f8e5m2":
        ref = f.astype(ml_dtypes.float8_e5m2).view(np.uint8).copy()
        tt = _u8(_t(bits).to(torch.float8_e5m2))
        xc["torch_diff_nonnan"] = int((tt != ref)[~isnan].sum())
        xc["torch_diff_nan"] = int((tt != ref)[isnan].sum())
        return ref, xc
    if target == "f8e8m0":
        ref = f.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8).copy()
        tt = _u8(_t(bits).to(torch.float8_e8m0fnu))
        xc["torch_diff"] = int((tt != ref).sum())
        return ref, xc
    raise ValueError(target)


# Hand-picked inputs with hand-written expected codes. (label, f32 bits, expected code)
F = lambda x: int(np.float32(x).view(np.uint32))  # noqa: E731

COMMON_SPECIALS = [
    ("+0", 0x00000000), ("-0", 0x80000000),
    ("fp32 min subnormal", 0x00000001), ("-fp32 min subnormal", 0x80000001),
    ("fp32 min normal", 0x00800000), ("fp32 max", 0x7F7FFFFF), ("-fp32 max", 0xFF7FFFFF),
    ("+inf", 0x7F800000), ("-inf", 0xFF800000),
    ("+qNaN", 0x7FC00000), ("-qNaN", 0xFFC00000), ("+sNaN 1", 0x7F800001),
    ("-sNaN 1", 0xFF800001), ("+sNaN 0x200000", 0x7FA00000), ("+NaN all ones", 0x7FFFFFFF),
    ("-NaN all ones", 0xFFFFFFFF), ("+sNaN max payload", 0x7FBFFFFF),
    ("1.0", F(1.0)), ("-1.0", F(-1.0)), ("1.0625", F(1.0625)), ("1.1875", F(1.1875)),
    ("2^-10", F(2.0 ** -10)), ("1.5*2^-10", F(1.5 * 2.0 ** -10)), ("-1.1875", F(-1.1875)),
]

EXPECTED = {
    # bf16: RNE on the upper 16 bits, overflow to inf, every NaN -> 0x7FC0
    "bf16": {
        "+0": 0x0000, "-0": 0x8000, "fp32 min subnormal": 0x0000, "-fp32 min subnormal": 0x8000,
        "fp32 min normal": 0x0080, "fp32 max": 0x7F80, "-fp32 max": 0xFF80,
        "+inf": 0x7F80, "-inf": 0xFF80, "+qNaN": 0x7FC0, "-qNaN": 0x7FC0, "+sNaN 1": 0x7FC0,
        "-sNaN 1": 0x7FC0, "+sNaN 0x200000": 0x7FC0, "+NaN all ones": 0x7FC0,
        "-NaN all ones": 0x7FC0, "+sNaN max payload": 0x7FC0,
        "1.0": 0x3F80, "-1.0": 0xBF80, "1.0625": 0x3F88, "1.1875": 0x3F98, "2^-10": 0x3A80,
        "1.5*2^-10": 0x3AC0, "-1.1875": 0xBF98,
    },
    "bf16+": [
        ("bf16 min subnormal 2^-133", 0x00010000, 0x0001),
        ("half bf16 min subnormal (tie -> 0)", 0x00008000, 0x0000),
        ("just above half min subnormal", 0x00008001, 0x0001),
        ("1.5 bf16 min subnormal (tie -> even 2)", 0x00018000, 0x0002),
        ("bf16 max subnormal", 0x007F0000, 0x007F),
        ("between max subnormal and min normal (tie -> even 0x80)", 0x007F8000, 0x0080),
        ("bf16 max finite", 0x7F7F0000, 0x7F7F),
        ("just below halfway max..inf", 0x7F7F7FFF, 0x7F7F),
        ("halfway bf16 max..2^128 (tie -> even = inf)", 0x7F7F8000, 0x7F80),
        ("-halfway bf16 max..2^128", 0xFF7F8000, 0xFF80),
        ("halfway between 0x7F7E and 0x7F7F (tie -> even 0x7F7E)", 0x7F7E8000, 0x7F7E),
        ("1 + 2^-8 (tie -> 1.0)", 0x3F808000, 0x3F80),
        ("1 + 3*2^-8 (tie -> even 0x3F82)", 0x3F818000, 0x3F82),
        ("1 + 2^-8 + 2^-23 (above tie)", 0x3F808001, 0x3F81),
    ],
    # f16: IEEE RNE, subnormals, overflow to inf; NaN keeps sign, sets the quiet bit, keeps the
    # top 9 payload bits
    "f16": {
        "+0": 0x0000, "-0": 0x8000, "fp32 min subnormal": 0x0000, "-fp32 min subnormal": 0x8000,
        "fp32 min normal": 0x0000, "fp32 max": 0x7C00, "-fp32 max": 0xFC00,
        "+inf": 0x7C00, "-inf": 0xFC00, "+qNaN": 0x7E00, "-qNaN": 0xFE00, "+sNaN 1": 0x7E00,
        "-sNaN 1": 0xFE00, "+sNaN 0x200000": 0x7F00, "+NaN all ones": 0x7FFF,
        "-NaN all ones": 0xFFFF, "+sNaN max payload": 0x7FFF,
        "1.0": 0x3C00, "-1.0": 0xBC00, "1.0625": 0x3C40, "1.1875": 0x3CC0, "2^-10": 0x1400,
        "1.5*2^-10": 0x1600, "-1.1875": 0xBCC0,
    },
    "f16+": [
        ("f16 min subnormal 2^-24", F(2.0 ** -24), 0x0001),
        ("2^-25 (tie -> 0)", F(2.0 ** -25), 0x0000),
        ("-2^-25 (tie -> -0)", F(-(2.0 ** -25)), 0x8000),
        ("just above 2^-25", F(2.0 ** -25) + 1, 0x0001),
        ("1.5*2^-24 (tie -> even 2)", F(1.5 * 2.0 ** -24), 0x0002),
        ("2.5*2^-24 (tie -> even 2)", F(2.5 * 2.0 ** -24), 0x0002),
        ("f16 max subnormal", F(1023 * 2.0 ** -24), 0x03FF),
        ("1023.5*2^-24 (tie -> min normal)", F(1023.5 * 2.0 ** -24), 0x0400),
        ("f16 min normal 2^-14", F(2.0 ** -14), 0x0400),
        ("f16 max 65504", F(65504.0), 0x7BFF),
        ("65519.996 (below halfway)", F(65520.0) - 1, 0x7BFF),
        ("65520 (tie -> even = inf)", F(65520.0), 0x7C00),
        ("-65520", F(-65520.0), 0xFC00),
        ("65536", F(65536.0), 0x7C00),
        ("65488 (tie between 0x7BFE and 0x7BFF -> 0x7BFE)", F(65488.0), 0x7BFE),
        ("1 + 2^-11 (tie -> 1.0)", F(1.0 + 2.0 ** -11), 0x3C00),
        ("1 + 3*2^-11 (tie -> even 0x3C02)", F(1.0 + 3 * 2.0 ** -11), 0x3C02),
    ],
    # f8e4m3fn: clamp to +-448 (NaN passes), then RNE with subnormals; NaN -> 0x7F | sign
    "f8e4m3fn": {
        "+0": 0x00, "-0": 0x80, "fp32 min subnormal": 0x00, "-fp32 min subnormal": 0x80,
        "fp32 min normal": 0x00, "fp32 max": 0x7E, "-fp32 max": 0xFE,
        "+inf": 0x7E, "-inf": 0xFE, "+qNaN": 0x7F, "-qNaN": 0xFF, "+sNaN 1": 0x7F,
        "-sNaN 1": 0xFF, "+sNaN 0x200000": 0x7F, "+NaN all ones": 0x7F,
        "-NaN all ones": 0xFF, "+sNaN max payload": 0x7F,
        "1.0": 0x38, "-1.0": 0xB8, "1.0625": 0x38, "1.1875": 0x3A, "2^-10": 0x00,
        "1.5*2^-10": 0x01, "-1.1875": 0xBA,
    },
    "f8e4m3fn+": [
        ("e4m3 min subnormal 2^-9", F(2.0 ** -9), 0x01),
        ("-2^-10 (tie -> -0)", F(-(2.0 ** -10)), 0x80),
        ("just above 2^-10", F(2.0 ** -10) + 1, 0x01),
        ("1.5*2^-9 (tie -> even 2)", F(1.5 * 2.0 ** -9), 0x02),
        ("e4m3 max subnormal 7*2^-9", F(7 * 2.0 ** -9), 0x07),
        ("7.5*2^-9 (tie -> min normal)", F(7.5 * 2.0 ** -9), 0x08),
        ("e4m3 min normal 2^-6", F(2.0 ** -6), 0x08),
        ("e4m3 max 448", F(448.0), 0x7E),
        ("416 (second largest)", F(416.0), 0x7D),
        ("432 (tie 416..448 -> even 448)", F(432.0), 0x7E),
        ("431.99997 (below tie)", F(432.0) - 1, 0x7D),
        ("448.0001", F(448.0001), 0x7E),
        ("464", F(464.0), 0x7E),
        ("465", F(465.0), 0x7E),
        ("1000", F(1000.0), 0x7E),
        ("-465", F(-465.0), 0xFE),
        ("1e30", F(1e30), 0x7E),
    ],
    # f8e5m2 (ml_dtypes): no clamp, RNE, subnormals, overflow to +-inf; NaN -> 0x7E | sign
    "f8e5m2": {
        "+0": 0x00, "-0": 0x80, "fp32 min subnormal": 0x00, "-fp32 min subnormal": 0x80,
        "fp32 min normal": 0x00, "fp32 max": 0x7C, "-fp32 max": 0xFC,
        "+inf": 0x7C, "-inf": 0xFC, "+qNaN": 0x7E, "-qNaN": 0xFE, "+sNaN 1": 0x7E,
        "-sNaN 1": 0xFE, "+sNaN 0x200000": 0x7E, "+NaN all ones": 0x7E,
        "-NaN all ones": 0xFE, "+sNaN max payload": 0x7E,
        "1.0": 0x3C, "-1.0": 0xBC, "1.0625": 0x3C, "1.1875": 0x3D, "2^-10": 0x14,
        "1.5*2^-10": 0x16, "-1.1875": 0xBD,
    },
    "f8e5m2+": [
        ("e5m2 min subnormal 2^-16", F(2.0 ** -16), 0x01),
        ("2^-17 (tie -> 0)", F(2.0 ** -17), 0x00),
        ("just above 2^-17", F(2.0 ** -17) + 1, 0x01),
        ("1.5*2^-17", F(1.5 * 2.0 ** -17), 0x01),
        ("1.5*2^-16 (tie -> even 2)", F(1.5 * 2.0 ** -16), 0x02),
        ("e5m2 max subnormal 3*2^-16", F(3 * 2.0 ** -16), 0x03),
        ("3.5*2^-16 (tie -> min normal)", F(3.5 * 2.0 ** -16), 0x04),
        ("e5m2 min normal 2^-14", F(2.0 ** -14), 0x04),
        ("e5m2 max 57344", F(57344.0), 0x7B),
        ("49152 (second largest)", F(49152.0), 0x7A),
        ("53248 (tie 49152..57344 -> even 49152)", F(53248.0), 0x7A),
        ("57345", F(57345.0), 0x7B),
        ("61439.996 (below halfway to 65536)", F(61440.0) - 1, 0x7B),
        ("61440 (tie -> even = inf)", F(61440.0), 0x7C),
        ("-61440", F(-61440.0), 0xFC),
        ("65536", F(65536.0), 0x7C),
        ("1 + 2^-3 (tie -> 1.0)", F(1.125), 0x3C),
        ("1 + 3*2^-3 (tie -> even 1.5)", F(1.375), 0x3E),
    ],
    # f8e8m0 (ml_dtypes float8_e8m0fnu): see the doc; ties up, no zero/negatives/inf
    "f8e8m0": {
        "+0": 0xFF, "-0": 0xFF, "fp32 min subnormal": 0x00, "-fp32 min subnormal": 0xFF,
        "fp32 min normal": 0x01, "fp32 max": 0xFF, "-fp32 max": 0xFF,
        "+inf": 0xFF, "-inf": 0xFF, "+qNaN": 0xFF, "-qNaN": 0xFF, "+sNaN 1": 0xFF,
        "-sNaN 1": 0xFF, "+sNaN 0x200000": 0xFF, "+NaN all ones": 0xFF,
        "-NaN all ones": 0xFF, "+sNaN max payload": 0xFF,
        "1.0": 0x7F, "-1.0": 0xFF, "1.0625": 0x7F, "1.1875": 0x7F, "2^-10": 0x75,
        "1.5*2^-10": 0x76, "-1.1875": 0xFF,
    },
    "f8e8m0+": [
        ("e8m0 min 2^-127 (fp32 subnormal)", 0x00400000, 0x00),
        ("2^-128 (below the minimum)", 0x00200000, 0x00),
        ("2^-127 + 2^-149 (fp32 subnormal above the minimum -> up)", 0x00400001, 0x01),
        ("1.5*2^-127", 0x00600000, 0x01),
        ("largest fp32 subnormal", 0x007FFFFF, 0x01),
        ("2^-126", 0x00800000, 0x01),
        ("1.4999999", 0x3FBFFFFF, 0x7F),
        ("1.5 (tie -> up)", F(1.5), 0x80),
        ("1.9999999", 0x3FFFFFFF, 0x80),
        ("2.0", F(2.0), 0x80),
        ("3.0 (tie -> up, not even)", F(3.0), 0x81),
        ("6.0 (tie -> up)", F(6.0), 0x82),
        ("0.75 (tie -> up)", F(0.75), 0x7F),
        ("0.7499999", 0x3F3FFFFF, 0x7E),
        ("-2.0", F(-2.0), 0xFF),
        ("e8m0 max 2^127", 0x7F000000, 0xFE),
        ("1.4999999*2^127", 0x7F3FFFFF, 0xFE),
        ("1.5*2^127 (rounds past max -> NaN)", 0x7F400000, 0xFF),
    ],
}


def special_cases(target):
    rows = [(lbl, bits, EXPECTED[target][lbl]) for lbl, bits in COMMON_SPECIALS]
    return rows + EXPECTED[target + "+"]


# ---------------------------------------------------------------------------------------------
# Decode tables
# ---------------------------------------------------------------------------------------------

def decode_tables():
    out = {}
    p16 = np.arange(65536, dtype=np.uint16)
    bf = torch.from_numpy(p16.view(np.int16)).view(torch.bfloat16).float()
    bf = bf.view(torch.int32).numpy().view(np.uint32).copy()
    ml = p16.view(ml_dtypes.bfloat16).astype(np.float32).view(np.uint32)
    check(np.array_equal(bf, p16.astype(np.uint32) << 16), "bf16 decode is not a 16-bit shift")
    check(np.array_equal(bf, ml), "bf16 decode: torch != ml_dtypes")
    out["bf16"] = bf

    h = p16.view(np.float16).astype(np.float32).view(np.uint32).copy()
    th = torch.from_numpy(p16.view(np.int16)).view(torch.float16).float()
    th = th.view(torch.int32).numpy().view(np.uint32)
    isnan = (p16 & 0x7FFF) > 0x7C00
    check(np.array_equal(h[~isnan], th[~isnan]), "f16 decode: numpy != torch on non-NaN")
    n = int((h != th)[isnan].sum())
    if n:
        note(f"f16 decode: numpy and torch differ on {n} of {int(isnan.sum())} NaN patterns: numpy "
             "keeps signalling NaNs signalling (0x7C01 -> 0x7F802000), torch sets the quiet bit "
             f"(0x7C01 -> {hex(int(th[0x7C01]))}); the table is numpy's")
    out["f16"] = h

    p8 = np.arange(256, dtype=np.uint8)
    for name, mdt, tdt in [("f8e4m3fn", ml_dtypes.float8_e4m3fn, torch.float8_e4m3fn),
                           ("f8e5m2", ml_dtypes.float8_e5m2, torch.float8_e5m2),
                           ("f8e8m0", ml_dtypes.float8_e8m0fnu, torch.float8_e8m0fnu)]:
        m = p8.view(mdt).astype(np.float32).view(np.uint32).copy()
        t = torch.from_numpy(p8).view(tdt).float().view(torch.int32).numpy().view(np.uint32)
        mnan = np.isnan(m.view(np.float32))
        tnan = np.isnan(t.view(np.float32))
        check(np.array_equal(mnan, tnan), f"{name} decode: NaN codes differ")
        check(np.array_equal(m[~mnan], t[~mnan]), f"{name} decode: torch != ml_dtypes")
        diff = [(int(c), int(t[c]), int(m[c])) for c in np.nonzero(m != t)[0]]
        if diff:
            note(f"{name} decode NaN payloads differ (code: torch, ml_dtypes): " +
                 ", ".join(f"0x{c:02X}: 0x{a:08X}, 0x{b:08X}" for c, a, b in diff))
        out[name] = m
    # Sanity anchors from FORMATS.md §5.
    e4 = out["f8e4m3fn"].view(np.float32)
    check(e4[0x7E] == 448 and e4[0x38] == 1 and e4[0x08] == 2.0 ** -6 and e4[0x01] == 2.0 ** -9,
          "e4m3fn anchors")
    e5 = out["f8e5m2"].view(np.float32)
    check(e5[0x7B] == 57344 and np.isinf(e5[0x7C]) and e5[0x04] == 2.0 ** -14, "e5m2 anchors")
    e8 = out["f8e8m0"]
    check(e8[0] == 0x00400000 and e8[127] == 0x3F800000 and e8[254] == 0x7F000000
          and e8[255] == 0x7FC00000, "e8m0 anchors")
    return out


# ---------------------------------------------------------------------------------------------
# INT4 (compressed-tensors 0.12.2)
# ---------------------------------------------------------------------------------------------

def gen(tag):
    seed = int.from_bytes(hashlib.sha256(("numerics/" + tag).encode()).digest()[:8], "little")
    return torch.Generator().manual_seed(seed)


def codes(tag, shape):
    return torch.randint(-8, 8, shape, generator=gen(tag), dtype=torch.int8)


def bf16_scales(tag, shape, lo=-12, hi=-4):
    """Positive BF16 scales, log-uniform in [2^lo, 2^hi), random 7-bit mantissa."""
    g = gen(tag)
    e = torch.randint(lo, hi, shape, generator=g).double()
    m = torch.randint(0, 128, shape, generator=g).double()
    return ((1 + m / 128) * torch.pow(2.0, e)).to(torch.bfloat16)


def int4_pack_cases():
    t = {}
    cases = [
        ("example8", torch.tensor([[-8, -7, -1, 0, 1, 2, 7, 3]], dtype=torch.int8)),
        ("example10", torch.arange(-5, 5, dtype=torch.int8).reshape(1, 10)),
        ("3x8", codes("pack/3x8", (3, 8))),
        ("5x10", codes("pack/5x10", (5, 10))),
        ("4x64", codes("pack/4x64", (4, 64))),
        ("7x33", codes("pack/7x33", (7, 33))),
    ]
    for name, v in cases:
        p = pack_to_int32(v, 4)
        check(p.dtype == torch.int32 and tuple(p.shape) == (v.shape[0], -(-v.shape[1] // 8)),
              f"pack {name} shape")
        check(torch.equal(unpack_from_int32(p, 4, v.shape), v), f"pack {name} round trip")
        t[f"pack.{name}.values"] = v.contiguous()
        t[f"pack.{name}.packed"] = p.contiguous()
    w = [x & 0xFFFFFFFF for x in t["pack.example8.packed"].flatten().tolist()]
    check(w == [0xBFA98710], "FORMATS.md §2.2 worked example (8 values)")
    w = [x & 0xFFFFFFFF for x in t["pack.example10.packed"].flatten().tolist()]
    check(w == [0xA9876543, 0x000000CB], "FORMATS.md §2.2 worked example (10 values)")
    # Zero points: packed along dim 0, as PackedQuantizationCompressor.compress_weight does.
    for name, shape in [("8x3", (8, 3)), ("10x2", (10, 2))]:
        v = codes(f"zp/{name}", shape)
        p = pack_to_int32(v, 4, packed_dim=0)
        check(tuple(p.shape) == (-(-shape[0] // 8), shape[1]), f"zp {name} shape")
        check(torch.equal(unpack_from_int32(p, 4, v.shape, packed_dim=0), v), f"zp {name} rt")
        t[f"zp.{name}.values"] = v.contiguous()
        t[f"zp.{name}.packed"] = p.contiguous()
    return t


def expand_group(s, cols, group):
    return s.repeat_interleave(group, dim=1)[:, :cols]


def int4_dequant_cases():
    t = {}
    R, C, G = 16, 128, 32
    group_args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group",
                                  group_size=G)

    def store(name, q, s, out, **extra):
        t[f"{name}.codes"] = q.contiguous()
        t[f"{name}.packed"] = pack_to_int32(q, 4).contiguous()
        t[f"{name}.scale"] = s.contiguous()
        t[f"{name}.output"] = out.contiguous()
        for k, v in extra.items():
            t[f"{name}.{k}"] = v.contiguous()
        check(out.dtype == s.dtype, f"{name}: output dtype {out.dtype} != scale dtype")

    # group, BF16 scales (K2), plus the exact FP32 product
    q = codes("dq/group_bf16/codes", (R, C))
    s = bf16_scales("dq/group_bf16/scale", (R, C // G))
    out = dequantize(q, s, None, args=group_args)
    exact = (q.double() * expand_group(s.double(), C, G)).float()
    check(torch.equal(exact.double(), q.double() * expand_group(s.double(), C, G)),
          "group_bf16: q*s not exact in FP32")
    check(torch.equal(out, exact.to(torch.bfloat16)), "group_bf16: library != bf16_rne(q*s)")
    store("group_bf16", q, s, out, exact_f32=exact)

    # group, FP16 scales (log-uniform over 2^-18..2^-3: some products are FP16 subnormals)
    q = codes("dq/group_f16/codes", (R, C))
    s = bf16_scales("dq/group_f16/scale", (R, C // G), lo=-18, hi=-3).to(torch.float16)
    g = gen("dq/group_f16/mant")
    s = (s.double() * (1 + torch.randint(0, 8, s.shape, generator=g).double() / 1024)).half()
    out = dequantize(q, s, None, args=group_args)
    check(torch.equal(out, (q.double() * expand_group(s.double(), C, G)).half()),
          "group_f16: library != f16_rne(q*s)")
    store("group_f16", q, s, out)

    # group, FP32 scales
    q = codes("dq/group_f32/codes", (R, C))
    g = gen("dq/group_f32/scale")
    s = (torch.rand((R, C // G), generator=g, dtype=torch.float32) + 0.5) * 1e-2
    out = dequantize(q, s, None, args=group_args)
    check(torch.equal(out, (q.double() * expand_group(s.double(), C, G)).float()),
          "group_f32: library != f32_rne(q*s)")
    store("group_f32", q, s, out)

    # channel, BF16 scales [out, 1]
    q = codes("dq/channel_bf16/codes", (R, C))
    s = bf16_scales("dq/channel_bf16/scale", (R, 1))
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="channel")
    out = dequantize(q, s, None, args=args)
    check(torch.equal(out, (q.double() * s.double()).to(torch.bfloat16)), "channel_bf16")
    store("channel_bf16", q, s, out)

    # tensor, one BF16 scale (shape [1])
    q = codes("dq/tensor_bf16/codes", (R, C))
    s = torch.tensor([0.0137], dtype=torch.bfloat16)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="tensor")
    out = dequantize(q, s, None, args=args)
    check(torch.equal(out, (q.double() * s.double()).to(torch.bfloat16)), "tensor_bf16")
    store("tensor_bf16", q, s, out)

    # asymmetric group with zero points, BF16 scales: W = bf16((q - zp) * s)
    q = codes("dq/asym_group_bf16/codes", (R, C))
    s = bf16_scales("dq/asym_group_bf16/scale", (R, C // G))
    zp = codes("dq/asym_group_bf16/zp", (R, C // G))
    args = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group",
                            group_size=G)
    out = dequantize(q, s, zp, args=args)
    ref = ((q.double() - expand_group(zp.double(), C, G)) * expand_group(s.double(), C, G))
    check(torch.equal(out, ref.to(torch.bfloat16)), "asym_group_bf16")
    zpp = pack_to_int32(zp, 4, packed_dim=0)
    check(torch.equal(unpack_from_int32(zpp, 4, zp.shape, packed_dim=0), zp), "asym zp rt")
    store("asym_group_bf16", q, s, out, zero_point=zp, zero_point_packed=zpp)

    # group with g_idx (actorder "group"): W[r, c] = bf16(q[r, c] * s[r, g_idx[c]])
    q = codes("dq/gidx_group_bf16/codes", (R, C))
    s = bf16_scales("dq/gidx_group_bf16/scale", (R, C // G))
    perm = torch.randperm(C, generator=gen("dq/gidx_group_bf16/perm"))
    g_idx = (torch.argsort(perm) // G).to(torch.int32)  # column perm[k] belongs to group k // G
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group",
                            group_size=G, actorder="group")
    out = dequantize(q, s, None, args=args, g_idx=g_idx)
    ref = (q.double() * s.double()[:, g_idx.long()]).to(torch.bfloat16)
    check(torch.equal(out, ref), "gidx_group_bf16")
    check(not torch.equal(out, dequantize(q, s, None, args=group_args)), "g_idx has no effect")
    store("gidx_group_bf16", q, s, out, g_idx=g_idx)
    return t


def int4_k2row_case():
    R, C, G = 8, 7168, 32
    q = codes("k2row/codes", (R, C))
    s = bf16_scales("k2row/scale", (R, C // G), lo=-10, hi=-5)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group",
                            group_size=G)
    out = dequantize(q, s, None, args=args)
    exact = q.double() * expand_group(s.double(), C, G)
    check(torch.equal(out, exact.to(torch.bfloat16)), "k2row: library != bf16_rne(q*s)")
    inexact = float((out.double() != exact).double().mean())
    check(0.30 < inexact < 0.45, f"k2row: inexact fraction {inexact}")
    t = {"k2row.codes": q, "k2row.packed": pack_to_int32(q, 4), "k2row.scale": s,
         "k2row.output": out, "k2row.weight_shape": torch.tensor([R, C], dtype=torch.int64)}
    return {k: v.contiguous() for k, v in t.items()}, inexact


# ---------------------------------------------------------------------------------------------
# FP8 block (DeepSeek-V3 weight_scale_inv layout)
# ---------------------------------------------------------------------------------------------

def fp8_block_quantize(w, bh, bw):
    """w: float32 [N, K]. Per block (tail blocks cover only the real elements):
    amax = max |w|, s = amax / 448 (float32; 1.0 when amax == 0),
    q = clamp(w / s, -448, 448) -> e4m3fn, dequant = float32(q) * s."""
    N, K = w.shape
    nr, nc = -(-N // bh), -(-K // bw)
    scale = torch.empty((nr, nc), dtype=torch.float32)
    q = torch.empty((N, K), dtype=torch.float8_e4m3fn)
    deq = torch.empty((N, K), dtype=torch.float32)
    for i in range(nr):
        for j in range(nc):
            blk = w[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw]
            amax = blk.abs().max()
            s = amax / 448.0 if float(amax) != 0 else torch.tensor(1.0, dtype=torch.float32)
            check(s.dtype == torch.float32, "fp8 scale dtype")
            quot = blk / s
            # torch's float32 division is IEEE division (checked through float64, which rounds
            # a quotient of two FP32 values to FP32 without double-rounding error).
            check(torch.equal(quot, (blk.double() / s.double()).float()), "fp8 quotient")
            qb = torch.clamp(quot, -448.0, 448.0).to(torch.float8_e4m3fn)
            pol = policy_encode(quot.contiguous().view(torch.int32).numpy().view(np.uint32)
                                .reshape(-1), "f8e4m3fn")
            check(np.array_equal(pol, _u8(qb).reshape(-1)), "fp8 block: torch != policy")
            scale[i, j] = s
            q[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw] = qb
            deq[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw] = qb.float() * s
    return q, scale, deq


def fp8_cases():
    t = {}
    summary = []

    def case(name, inp, bh, bw, store_dequant=True):
        check(inp.dtype == torch.bfloat16, "fp8 inputs are BF16")
        q, s, deq = fp8_block_quantize(inp.float(), bh, bw)
        t[f"{name}.input"] = inp.contiguous()
        t[f"{name}.block_size"] = torch.tensor([bh, bw], dtype=torch.int32)
        t[f"{name}.weight"] = q.contiguous()
        t[f"{name}.weight_scale_inv"] = s.contiguous()
        if store_dequant:
            t[f"{name}.dequant"] = deq.contiguous()
        rel = float((deq - inp.float()).norm() / inp.float().norm().clamp_min(1e-30))
        summary.append(f"{name} {list(inp.shape)} block {bh}x{bw} scale {list(s.shape)} "
                       f"rel L2 err {rel:.3g}")

    def normal(tag, shape, std=0.02):
        return (torch.randn(shape, generator=gen(tag)) * std).to(torch.bfloat16)

    # `.dequant` is stored only where it is small or special (size budget); elsewhere a test
    # computes float32(decode(weight)) * weight_scale_inv itself.
    case("rand256x256", normal("fp8/rand256x256", (256, 256)), 128, 128, store_dequant=False)
    w = normal("fp8/special128x384", (128, 384))
    w[:, 0:128] = 0.0                      # block (0, 0): all zero, with some -0.0
    w[0:128:9, 0:128:7] = -0.0
    w[37, 200] = 1000.0                    # block (0, 1): one huge outlier
    w[5, 300] = -1000.0                    # block (0, 2): outlier, negative
    case("special128x384", w, 128, 128)
    case("tail200x300", normal("fp8/tail200x300", (200, 300)), 128, 128, store_dequant=False)
    case("kva576x512", normal("fp8/kva576x512", (576, 512)), 128, 128, store_dequant=False)
    case("channel64x96", normal("fp8/channel64x96", (64, 96)), 1, 96)
    case("block64_130x70", normal("fp8/block64_130x70", (130, 70)), 64, 64)
    s = t["special128x384.weight_scale_inv"]
    check(float(s[0, 0]) == 1.0, "zero block scale must be 1.0")
    zb = _u8(t["special128x384.weight"][:, :128])
    check(set(np.unique(zb).tolist()) == {0x00, 0x80}, "zero block codes are +-0")
    check(tuple(t["tail200x300.weight_scale_inv"].shape) == (2, 3), "tail scale shape")
    check(tuple(t["kva576x512.weight_scale_inv"].shape) == (5, 4), "kv_a scale shape")
    check(tuple(t["block64_130x70.weight_scale_inv"].shape) == (3, 2), "b64 scale shape")
    check(tuple(t["channel64x96.weight_scale_inv"].shape) == (64, 1), "channel scale shape")
    return t, summary


# ---------------------------------------------------------------------------------------------

def exhaustive_check():
    print("exhaustive: policy_encode vs library references on all 2^32 FP32 patterns")
    chunk = 1 << 24
    for k in range((1 << 32) // chunk):
        bits = (np.arange(chunk, dtype=np.uint64) + k * chunk).astype(np.uint32)
        for target in TARGETS:
            ref, _ = reference_encode(bits, target)
            pol = policy_encode(bits, target)
            if not np.array_equal(ref, pol):
                bad = np.nonzero(ref != pol)[0][:5]
                raise SystemExit(f"exhaustive {target}: mismatch at " +
                                 ", ".join(f"0x{int(bits[i]):08X}: ref 0x{int(ref[i]):X} "
                                           f"policy 0x{int(pol[i]):X}" for i in bad))
        if k % 16 == 15:
            print(f"  {k + 1}/256 chunks ok", flush=True)
    print("exhaustive: all targets agree")


def main():
    check(compressed_tensors.__version__.startswith("0.12.2"),
          f"compressed-tensors {compressed_tensors.__version__}, need 0.12.2")
    r = SplitMix64(0)
    check(r.next() == 0xE220A8397B1DCDAF, "SplitMix64 test vector")

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    written = []

    def write(name, data):
        (OUT / name).write_bytes(data)
        written.append(name)

    # 1. decode tables
    for name, table in decode_tables().items():
        write(f"decode-{name}.u32", table.astype("<u4").tobytes())

    # 2. encode streams and specials
    bits = seeded_stream(SEED, N_STREAM)
    stream_notes = {}
    specials = {}
    for target in TARGETS:
        ref, xc = reference_encode(bits, target)
        pol = policy_encode(bits, target)
        check(np.array_equal(ref, pol), f"{target}: reference != documented policy on stream")
        dt = "<u2" if ref.dtype == np.uint16 else "u1"
        data = ref.astype(dt).tobytes()
        write(f"encode-{target}.sha256", (hashlib.sha256(data).hexdigest() + "\n").encode())
        write(f"encode-{target}.head", ref[:N_HEAD].astype(dt).tobytes())
        stream_notes[target] = xc
        rows = special_cases(target)
        sb = np.array([b for _, b, _ in rows], dtype=np.uint32)
        sref, _ = reference_encode(sb, target)
        spol = policy_encode(sb, target)
        for (lbl, b, exp), r_, p_ in zip(rows, sref, spol):
            check(int(r_) == exp and int(p_) == exp,
                  f"{target} special {lbl} (0x{b:08X}): expected 0x{exp:X}, "
                  f"reference 0x{int(r_):X}, policy 0x{int(p_):X}")
        specials[target] = [[int(b), int(c)] for b, c in zip(sb, sref)]
    # torch's own NaN behaviour for BF16 (scalar path vs vectorized path)
    scalar = {hex(b): hex(int(torch.tensor(float(np.uint32(b).view(np.float32)))
                               .to(torch.bfloat16).view(torch.int16).item()) & 0xFFFF)
              for b in (0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF)}
    stream_notes["bf16"]["torch_scalar_nan"] = scalar
    js = "{\n" + ",\n".join(
        f'  "{t}": [' + ", ".join(f"[{a}, {b}]" for a, b in specials[t]) + "]"
        for t in TARGETS) + "\n}\n"
    check(json.loads(js) == specials, "special JSON")
    write("encode-special.json", js.encode())

    # 3. INT4
    safetensors.torch.save_file(int4_pack_cases(), str(OUT / "int4-pack.safetensors"),
                                metadata={"format": "pt"})
    written.append("int4-pack.safetensors")
    safetensors.torch.save_file(int4_dequant_cases(), str(OUT / "int4-dequant.safetensors"),
                                metadata={"format": "pt"})
    written.append("int4-dequant.safetensors")
    k2, inexact = int4_k2row_case()
    safetensors.torch.save_file(k2, str(OUT / "int4-k2row.safetensors"),
                                metadata={"format": "pt"})
    written.append("int4-k2row.safetensors")

    # 4. FP8 block
    fp8, fp8_summary = fp8_cases()
    safetensors.torch.save_file(fp8, str(OUT / "fp8-block-cases.safetensors"),
                                metadata={"format": "pt"})
    written.append("fp8-block-cases.safetensors")

    # Summary
    total = 0
    print(f"torch {torch.__version__}, ml_dtypes {ml_dtypes.__version__}, numpy {np.__version__},"
          f" compressed-tensors {compressed_tensors.__version__}")
    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    for name in sorted(written):
        data = (OUT / name).read_bytes()
        total += len(data)
        print(f"{hashlib.sha256(data).hexdigest()}  {len(data):>9}  {name}")
    print(f"total {total} bytes")
    for target in TARGETS:
        print(f"encode {target}: sha256 {(OUT / f'encode-{target}.sha256').read_text().strip()}"
              f"  cross-checks {stream_notes[target]}")
    print(f"k2row: {inexact:.1%} of BF16 outputs differ from the exact q*s")
    for line in fp8_summary:
        print("fp8", line)
    for n in NOTES:
        print("note:", n)
    if "--exhaustive" in sys.argv[1:]:
        exhaustive_check()


if __name__ == "__main__":
    main()
