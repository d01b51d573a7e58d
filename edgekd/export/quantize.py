"""Full-integer int8 quantization of an export Graph, per TFLite's quantization spec.

* activations: int8, asymmetric, per tensor, from the min/max (always including 0) of the
  float activations over the calibration set; the model input and output included;
* FULLY_CONNECTED / CONV_2D weights: int8, symmetric (zero point 0), per output channel
  (TFLM's reference FULLY_CONNECTED and CONV_2D both requantize per channel); biases int32
  with scale input_scale * weight_scale and zero point 0;
* MAX/AVERAGE_POOL_2D and RESHAPE keep their input's quantization; MEAN (global average
  pooling) gets its own, calibrated like any activation, as TFLite's converter does;
* TANH outputs scale 1/128, zero point 0; SOFTMAX outputs scale 1/256, zero point -128.
"""

from dataclasses import replace

import numpy as np

from ..errors import EdgekdError
from . import float_eval
from .graph import POOLS, RESHAPE, SOFTMAX, TANH, WEIGHTED, Graph
from .qmath import INT32_MAX, round_half_away

FIXED = {TANH: (1 / 128, 0), SOFTMAX: (1 / 256, -128)}
CHUNK = 512


def quantize(graph, calib_x):
    """A new int8 Graph: `graph`'s ops with quantized weights and every tensor's
    (scale, zero_point), calibrated on `calib_x` [N, *input shape]."""
    x = _check_calibration(graph, calib_x)
    lo, hi = _ranges(graph, x)
    quant = [affine(lo[0], hi[0])]
    ops = []
    for i, op in enumerate(graph.ops):
        if op.kind in POOLS or op.kind == RESHAPE:
            quant.append(quant[i])
        elif op.kind in FIXED:
            quant.append(FIXED[op.kind])
        else:
            quant.append(affine(lo[i + 1], hi[i + 1]))
        ops.append(_quantize_weights(op, quant[i][0]) if op.kind in WEIGHTED else op)
    quant = [(float(np.float32(s)), int(z)) for s, z in quant]
    return Graph(graph.input_shape, ops, quant)


def _check_calibration(graph, calib_x):
    want = tuple(graph.input_shape[1:])
    if calib_x is None:
        raise EdgekdError("int8 export needs calibration data (--calib)")
    x = np.asarray(calib_x)
    if x.dtype.kind not in "iuf":
        raise EdgekdError(f"calibration data must be numeric, got dtype {x.dtype}")
    if x.ndim == len(want) + 1 and len(x) == 0:
        raise EdgekdError("the calibration set is empty")
    if tuple(x.shape[1:]) != want:
        raise EdgekdError(f"calibration samples have shape {list(x.shape[1:])}, the model "
                          f"takes {list(want)}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise EdgekdError("the calibration data holds NaN or inf")
    return x


def _ranges(graph, x):
    """Per tensor, the min and max over the calibration set (in chunks, to bound memory)."""
    lo = hi = None
    for i in range(0, len(x), CHUNK):
        acts = float_eval.run(graph, x[i:i + CHUNK], keep=True)
        clo, chi = [float(a.min()) for a in acts], [float(a.max()) for a in acts]
        lo = clo if lo is None else np.minimum(lo, clo)
        hi = chi if hi is None else np.maximum(hi, chi)
    return list(lo), list(hi)


def affine(lo, hi):
    """(scale, zero_point) mapping [lo, hi] (widened to hold 0) onto [-128, 127]."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255 if hi > lo else 1.0
    zp = int(np.clip(round_half_away(-128 - lo / scale), -128, 127))
    return scale, zp


def bias_scales(input_scale, w_scale):
    """An int32 bias's per-channel scale, input_scale * weight_scale as TFLM checks it."""
    return (np.float64(np.float32(input_scale)) * np.asarray(w_scale, np.float64)).astype(np.float32)


def _quantize_weights(op, input_scale):
    w = op.weight
    axes = tuple(range(1, w.ndim))
    amax = np.abs(w).max(axis=axes)
    w_scale = np.where(amax > 0, amax / 127, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (w.ndim - 1)
    q_weight = np.clip(round_half_away(w / w_scale.reshape(shape)), -127, 127).astype(np.int8)
    b = op.bias.astype(np.float64) / bias_scales(input_scale, w_scale)
    q_bias = np.clip(round_half_away(b), -INT32_MAX, INT32_MAX).astype(np.int32)
    return replace(op, q_weight=q_weight, w_scale=w_scale, q_bias=q_bias)
