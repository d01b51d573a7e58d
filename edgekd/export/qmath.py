"""TFLite's integer arithmetic, vectorised: QuantizeMultiplier, MultiplyByQuantizedMultiplier
with gemmlowp's rounding, and the float <-> int8 affine maps. Bit-exact with the TFLM
reference kernels (the tests compare against the interpreter), on int64 arrays that hold
int32 values."""

import math

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def round_half_away(x):
    """std::round (TfLiteRound): halves go away from zero, unlike np.round."""
    x = np.asarray(x)
    return np.where(x >= 0, np.floor(x + 0.5), np.ceil(x - 0.5))


def quantize_multiplier(real):
    """(multiplier, shift) with real ~= multiplier * 2^(shift - 31), multiplier in [2^30, 2^31)."""
    if real == 0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(round_half_away(q * (1 << 31)))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def _trunc_div_pow2(v, bits):
    """C++ integer division by 2^bits (rounds towards zero)."""
    return np.where(v >= 0, v >> bits, -((-v) >> bits))


def rounding_doubling_high_mul(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values held in int64."""
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    out = _trunc_div_pow2(ab + nudge, 31)
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, out)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp RoundingDivideByPOT: x / 2^exponent, halves away from zero."""
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite's MultiplyByQuantizedMultiplier (double rounding); multiplier and shift may be
    per-channel arrays broadcasting against x's last axis."""
    x = np.asarray(x, np.int64)
    multiplier, shift = np.asarray(multiplier, np.int64), np.asarray(shift, np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    wrapped = ((x << left) - INT32_MIN) % (1 << 32) + INT32_MIN    # int32 arithmetic
    return rounding_divide_by_pot(rounding_doubling_high_mul(wrapped, multiplier), right)


def quantize(x, scale, zero_point):
    """float -> int8 as TFLite's QUANTIZE op: round(x / scale) + zero_point, clamped."""
    q = round_half_away(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q, scale, zero_point):
    return ((np.asarray(q, np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


def activation_range(act, scale, zero_point):
    """CalculateActivationRangeQuantized: the int8 clamp of a fused relu / relu6."""
    def q(f):
        return zero_point + int(round_half_away(np.float32(f) / np.float32(scale)))
    lo = max(-128, q(0.0)) if act in ("relu", "relu6") else -128
    hi = min(127, q(6.0)) if act == "relu6" else 127
    return lo, hi
