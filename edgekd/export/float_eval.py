"""Float32 inference of an export Graph in NumPy, for calibration: int8 ranges are measured
on exactly the ops that will run (batchnorm folded, dropout gone), not on the training
layers. It runs TFLite ops, not layers, so graphs read back from .tflite bytes run too; the
convolution's columns, SAME padding and softmax are the training kernels' own."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..kernels.conv import im2col, out_size, same_padding
from ..kernels.softmax import softmax
from . import graph as g


def run(graph, x, keep=False):
    """Outputs for a batch `x` [N, *input]; with keep=True, every tensor of the chain."""
    t = np.asarray(x, np.float32).reshape((len(x),) + tuple(graph.input_shape[1:]))
    out = [t]
    for op in graph.ops:
        t = _EVAL[op.kind](op, t).astype(np.float32, copy=False)
        out.append(t)
    return out if keep else t


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


def columns(x, kernel, op):
    """[N,H,W,C] -> [N,Ho,Wo,kh*kw*C]: CONV_2D's im2col columns of `x` (SAME padding with
    zeros), in the (kh, kw, C) order of an OHWI kernel row."""
    (kh, kw), (sh, sw) = kernel, op.stride
    if op.padding == "SAME":
        pads = [same_padding(x.shape[1 + a], kernel[a], op.stride[a]) for a in (0, 1)]
        x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    ho, wo = out_size(x.shape[1], kh, sh), out_size(x.shape[2], kw, sw)
    return im2col(x, kh, kw, sh, sw, ho, wo).reshape(len(x), ho, wo, -1)


def _conv(op, x):
    cols = columns(x, op.weight.shape[1:3], op)
    return _act(op, cols @ op.weight.reshape(len(op.weight), -1).T + op.bias)


def _pool(op, x):
    win = windows(x, op.pool, op.stride)
    y = win.max(axis=(-2, -1)) if op.kind == g.MAX_POOL_2D else win.mean(axis=(-2, -1))
    return _act(op, y)


_EVAL = {
    g.FULLY_CONNECTED: _fc,
    g.CONV_2D: _conv,
    g.MAX_POOL_2D: _pool,
    g.AVERAGE_POOL_2D: _pool,
    g.MEAN: lambda op, x: x.mean(axis=op.axes),
    g.RESHAPE: lambda op, x: x.reshape((len(x),) + tuple(op.out_shape[1:])),
    g.TANH: lambda op, x: np.tanh(x),
    g.SOFTMAX: lambda op, x: softmax(x),
}
