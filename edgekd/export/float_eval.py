"""Float32 inference of an export Graph in NumPy, for calibration: int8 ranges are measured
on exactly the ops that will run (batchnorm folded, dropout gone), not on the training
layers. Self-contained on purpose, so export does not move with the training kernels."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .graph import (
    AVERAGE_POOL_2D,
    CONV_2D,
    FULLY_CONNECTED,
    MAX_POOL_2D,
    MEAN,
    RESHAPE,
    SOFTMAX,
    TANH,
)


def run(graph, x, keep=False):
    """Outputs for a batch `x` [N, *input]; with keep=True, every tensor of the chain."""
    t = np.asarray(x, np.float32).reshape((len(x),) + tuple(graph.input_shape[1:]))
    out = [t]
    for op in graph.ops:
        t = _EVAL[op.kind](op, t).astype(np.float32, copy=False)
        out.append(t)
    return out if keep else t


def same_pads(size, kernel, stride):
    """TensorFlow's (and TFLite's) SAME padding of one axis: (before, after)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _act(op, y):
    if op.act == "relu":
        return np.maximum(y, 0)
    if op.act == "relu6":
        return np.clip(y, 0, 6)
    return y


def windows(x, size, stride):
    """[N,H,W,C] -> [N,Ho,Wo,C,kh,kw]: every valid window of `size` (h, w) at `stride`."""
    return sliding_window_view(x, tuple(size), axis=(1, 2))[:, ::stride[0], ::stride[1]]


def _fc(op, x):
    return _act(op, x.reshape(len(x), -1) @ op.weight.T + op.bias)


def _conv(op, x):
    _, kh, kw, _ = op.weight.shape
    if op.padding == "SAME":
        (pt, pb), (pl, pr) = (same_pads(x.shape[1], kh, op.stride[0]),
                              same_pads(x.shape[2], kw, op.stride[1]))
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    win = windows(x, (kh, kw), op.stride)                      # N,Ho,Wo,C,kh,kw
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(win.shape[:3] + (-1,))
    return _act(op, cols @ op.weight.reshape(len(op.weight), -1).T + op.bias)


def _pool(op, x):
    win = windows(x, op.pool, op.stride)
    y = win.max(axis=(-2, -1)) if op.kind == MAX_POOL_2D else win.mean(axis=(-2, -1))
    return _act(op, y)


def _softmax(op, x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


_EVAL = {
    FULLY_CONNECTED: _fc,
    CONV_2D: _conv,
    MAX_POOL_2D: _pool,
    AVERAGE_POOL_2D: _pool,
    MEAN: lambda op, x: x.mean(axis=op.axes),
    RESHAPE: lambda op, x: x.reshape((len(x),) + tuple(op.out_shape[1:])),
    TANH: lambda op, x: np.tanh(x),
    SOFTMAX: _softmax,
}
