"""int8 reference inference, in integers exactly as TFLM's reference kernels compute.

FULLY_CONNECTED and CONV_2D accumulate (input - input_zero_point) * weight in int32, add the
int32 bias, requantize per output channel with QuantizeMultiplier /
MultiplyByQuantizedMultiplier (gemmlowp rounding), add the output zero point and clamp to
the fused activation's range; pools and MEAN follow TFLM's integer code (average pool
rounds halves away from zero, MEAN folds 1/n into its multiplier). These, RESHAPE and
TANH (the float tanh of each dequantized int8 value, requantized) match the interpreter bit
for bit in tests/test_export_int8.py. SOFTMAX is computed in float too, while TFLM uses
gemmlowp's fixed-point exp: the two differ by at most one int8 step (TOLERANCE), on about
one output in 10,000.

Needs numpy only, so a board emulator can run it; `from_tflite` reads the bytes with the
schema shipped by tflite-micro.
"""

import numpy as np

from ..errors import EdgekdError
from ..kernels.softmax import softmax
from . import graph as g
from . import qmath
from .float_eval import columns, windows

TOLERANCE = {g.SOFTMAX: 1}   # max |ours - TFLM| in int8 steps; 0 for every other op


class Int8Model:
    """`run(x_int8) -> y_int8` for a full-integer model; quantize/dequantize helpers for the
    input and output tensors."""

    def __init__(self, graph):
        if not graph.int8:
            raise EdgekdError("Int8Model runs full-integer (int8) models only")
        self.graph = graph
        self.input_shape = tuple(graph.input_shape[1:])
        self.output_shape = tuple(graph.output_shape[1:])
        self.input_quant, self.output_quant = graph.quant[0], graph.quant[-1]
        shapes = graph.shapes
        self._steps = [_prepare(op, shapes[i], graph.quant[i], graph.quant[i + 1])
                       for i, op in enumerate(graph.ops)]

    @classmethod
    def from_tflite(cls, model_bytes):
        from .tflite_read import read_graph
        return cls(read_graph(model_bytes))

    @classmethod
    def from_graph(cls, graph):
        return cls(graph)

    def quantize_input(self, x):
        return qmath.quantize(x, *self.input_quant)

    def dequantize_output(self, y):
        return qmath.dequantize(y, *self.output_quant)

    def run(self, x):
        """int8 outputs for int8 inputs: a batch [N, *input] or one sample [*input]."""
        x = np.asarray(x)
        single = x.shape == self.input_shape
        if x.dtype != np.int8 or (not single and x.shape[1:] != self.input_shape):
            raise EdgekdError(f"Int8Model.run takes int8 input of shape [N, "
                              f"{', '.join(map(str, self.input_shape))}], got {x.dtype} "
                              f"{list(x.shape)}")
        t = x.reshape((-1,) + self.input_shape).astype(np.int64)
        for step in self._steps:
            t = step(t)
        y = t.astype(np.int8)
        return y[0] if single else y


def _prepare(op, in_shape, qin, qout):
    """A function int64 batch -> int64 batch computing `op` as TFLM does."""
    if op.kind in g.WEIGHTED:
        return _weighted(op, in_shape, qin, qout)
    if op.kind == g.MAX_POOL_2D:
        lo, hi = qmath.activation_range(op.act, *qout)
        return lambda x: np.clip(windows(x, op.pool, op.stride).max(axis=(-2, -1)), lo, hi)
    if op.kind == g.AVERAGE_POOL_2D:
        lo, hi = qmath.activation_range(op.act, *qout)
        n = op.pool[0] * op.pool[1]
        return lambda x: np.clip(_div_round(windows(x, op.pool, op.stride).sum(axis=(-2, -1)), n),
                                 lo, hi)
    if op.kind == g.MEAN:
        return _mean(op, in_shape, qin, qout)
    if op.kind == g.RESHAPE:
        return lambda x: x.reshape((len(x),) + tuple(op.out_shape[1:]))
    if op.kind == g.TANH:
        return _via_float(np.tanh, qin, qout)
    if op.kind == g.SOFTMAX:
        return _via_float(softmax, qin, qout)
    raise EdgekdError(f"the int8 reference does not run {op.kind}")   # pragma: no cover


def _weighted(op, in_shape, qin, qout):
    in_zp, (out_scale, out_zp) = qin[1], qout
    lo, hi = qmath.activation_range(op.act, out_scale, out_zp)
    mults = [qmath.quantize_multiplier(np.float64(np.float32(qin[0])) * np.float64(s)
                                       / np.float64(np.float32(out_scale)))
             for s in op.w_scale]
    mult = np.array([m for m, _ in mults], np.int64)
    shift = np.array([s for _, s in mults], np.int64)
    w = op.q_weight.astype(np.float64).reshape(len(op.q_weight), -1).T   # [K, out]
    bias = op.q_bias.astype(np.int64)

    def requantize(acc):
        y = qmath.multiply_by_quantized_multiplier(acc + bias, mult, shift) + out_zp
        return np.clip(y, lo, hi)

    if op.kind == g.FULLY_CONNECTED:
        # exact: |products| < 2^15 and far fewer than 2^38 terms, so float64 sums are integers
        return lambda x: requantize(np.rint((x.reshape(len(x), -1) - in_zp) @ w).astype(np.int64))

    def conv(x):
        xo = (x - in_zp).astype(np.float64)        # padding contributes 0, as TFLM skips it
        cols = columns(xo, op.q_weight.shape[1:3], op)
        return requantize(np.rint(cols @ w).astype(np.int64))
    return conv


def _mean(op, in_shape, qin, qout):
    """TFLM's QuantizedMeanOrSum: the 1/n folded into the requantization multiplier."""
    n = int(np.prod([in_shape[a] for a in op.axes]))
    mult, shift = qmath.quantize_multiplier(np.float64(np.float32(qin[0]))
                                            / np.float64(np.float32(qout[0])))
    s = min(n.bit_length() - 1, 32, 31 + shift)
    mult, shift = (mult << s) // n, shift - s

    def run(x):
        y = qmath.multiply_by_quantized_multiplier(x.sum(axis=op.axes) - qin[1] * n, mult, shift)
        return np.clip(y + qout[1], -128, 127)
    return run


def _trunc_div(a, n):
    """C integer division (towards zero)."""
    return np.where(a >= 0, a // n, -((-a) // n))


def _div_round(acc, n):
    """TFLM's average pool rounding: (acc +- n/2) / n, halves away from zero."""
    return np.where(acc > 0, _trunc_div(acc + n // 2, n), _trunc_div(acc - n // 2, n))


def _via_float(f, qin, qout):
    def run(x):
        y = f(qmath.dequantize(x, *qin).astype(np.float64))
        return qmath.quantize(y, *qout).astype(np.int64)
    return run
