"""Lower an edgekd model to a chain of TFLite ops (see graph.py).

dense -> FULLY_CONNECTED; conv2d -> CONV_2D; conv1d and the 1-D pools run as their 2-D ops
on a height-1 tensor, with RESHAPE where the rank changes; global_avgpool -> MEAN; flatten
-> RESHAPE; relu and relu6 are fused into the op before them as TFLite fuses them, tanh is
a separate TANH op; dropout is the identity at inference and vanishes; batchnorm folds
into the dense or conv layer before it (weights and bias scaled by gamma/sqrt(var+eps),
bias shifted), which is only possible when that layer has no activation.
"""

import numpy as np

from ..errors import EdgekdError
from .graph import (
    AVERAGE_POOL_2D,
    CONV_2D,
    FULLY_CONNECTED,
    MAX_POOL_2D,
    MEAN,
    RESHAPE,
    SOFTMAX,
    TANH,
    Graph,
    Op,
)

SUPPORTED = ("dense", "conv1d", "conv2d", "maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d",
             "global_avgpool", "flatten", "dropout", "batchnorm")


def lower(model, softmax=False):
    """The float32 Graph of `model` (an edgekd Sequential), logits out, or probabilities
    with `softmax`. One-line EdgekdError for what cannot be exported."""
    b = _Builder(model.input_shape)
    for i, layer in enumerate(model.layers):
        where = f"layer {i} ({layer.type})"
        if layer.type not in SUPPORTED:
            raise EdgekdError(f"{where} cannot be exported to TFLite; supported layers: "
                              f"{', '.join(SUPPORTED)}")
        _check_finite(layer, where)
        getattr(b, layer.type)(layer, where)
    b.reshape_to((1,) + tuple(model.layers[-1].out_shape))
    if softmax:
        b.emit(Op(SOFTMAX, b.shape))
    return Graph((1,) + tuple(model.input_shape), b.ops)


def _check_finite(layer, where):
    for name, a in {**layer.params, **layer.buffers}.items():
        if not np.all(np.isfinite(a)):
            raise EdgekdError(f"{where}: {name} holds NaN or inf; nothing to export")


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


class _Builder:
    """Emits ops while tracking the current tensor shape and which op a batchnorm may fold
    into (the last op, when it is a dense/conv without activation)."""

    def __init__(self, input_shape):
        self.input = self.shape = (1,) + tuple(input_shape)
        self.ops, self.foldable, self.last = [], None, "the input"

    def emit(self, op):
        self.ops.append(op)
        self.shape = tuple(op.out_shape)
        self.foldable = None

    def reshape_to(self, shape):
        """Give the current tensor `shape`, merging with a RESHAPE just emitted."""
        shape = tuple(shape)
        if shape == self.shape:
            return
        if self.ops and self.ops[-1].kind == RESHAPE:
            self.ops.pop()
            self.shape = tuple(self.ops[-1].out_shape) if self.ops else self.input
            if shape == self.shape:
                return
        self.emit(Op(RESHAPE, shape))

    def weighted(self, op, act, where):
        """Emit a dense/conv op with its activation fused (or a TANH after it)."""
        op.act = act if act in ("relu", "relu6") else "none"
        self.emit(op)
        if act == "tanh":
            self.emit(Op(TANH, op.out_shape))
        elif act == "none":
            self.foldable = len(self.ops) - 1
        self.last = f"{where} with activation {act}"

    def as_4d(self):
        """A [1, L, C] tensor as [1, 1, L, C], for the 2-D op that runs a 1-D layer."""
        if len(self.shape) == 3:
            self.reshape_to((1, 1) + self.shape[1:])

    # one method per supported layer type -------------------------------------------------
    def dense(self, layer, where):
        self.reshape_to((1, layer.in_shape[0]))
        k = layer.params["kernel"]
        self.weighted(Op(FULLY_CONNECTED, (1, k.shape[1]), weight=_f32(k.T),
                         bias=_f32(layer.params["bias"])), layer.cfg["activation"], where)

    def conv2d(self, layer, where):
        k = layer.params["kernel"]                       # HWIO
        self.reshape_to((1,) + tuple(layer.in_shape))
        self.weighted(Op(CONV_2D, (1,) + tuple(layer.out_shape), weight=_f32(k.transpose(3, 0, 1, 2)),
                         bias=_f32(layer.params["bias"]), stride=tuple(layer.stride),
                         padding=layer.cfg["padding"].upper()), layer.cfg["activation"], where)

    def conv1d(self, layer, where):
        k = layer.params["kernel"]                       # [k, cin, filters]
        self.as_4d()
        out = (1, 1) + tuple(layer.out_shape)
        self.weighted(Op(CONV_2D, out, weight=_f32(k.transpose(2, 0, 1)[:, None]),
                         bias=_f32(layer.params["bias"]), stride=(1, int(layer.cfg["stride"])),
                         padding=layer.cfg["padding"].upper()), layer.cfg["activation"], where)

    def _pool(self, kind, layer, where, one_d):
        size, stride = layer.cfg["pool_size"], layer.cfg["stride"]
        stride = size if stride is None else stride
        if one_d:
            self.as_4d()
            pool, stride, out = (1, size), (1, stride), (1, 1) + tuple(layer.out_shape)
        else:
            pool, stride, out = _pair(size), _pair(stride), (1,) + tuple(layer.out_shape)
        self.emit(Op(kind, out, pool=pool, stride=stride))
        self.last = where

    def maxpool1d(self, layer, where):
        self._pool(MAX_POOL_2D, layer, where, True)

    def avgpool1d(self, layer, where):
        self._pool(AVERAGE_POOL_2D, layer, where, True)

    def maxpool2d(self, layer, where):
        self._pool(MAX_POOL_2D, layer, where, False)

    def avgpool2d(self, layer, where):
        self._pool(AVERAGE_POOL_2D, layer, where, False)

    def global_avgpool(self, layer, where):
        axes = tuple(range(1, len(self.shape) - 1))
        self.emit(Op(MEAN, (1, self.shape[-1]), axes=axes))
        self.last = where

    def flatten(self, layer, where):
        self.reshape_to((1, int(np.prod(self.shape[1:]))))
        self.last = where

    def dropout(self, layer, where):
        """The identity at inference: a batchnorm after it still folds into the layer before."""

    def batchnorm(self, layer, where):
        if self.foldable is None:
            raise EdgekdError(f"{where} follows {self.last}: export folds a batchnorm into the "
                              f"dense or conv layer before it, which needs that layer to have "
                              f"no activation")
        op = self.ops[self.foldable]
        p, bufs = layer.params, layer.buffers
        scale = p["gamma"].astype(np.float64) / np.sqrt(
            bufs["running_var"].astype(np.float64) + float(layer.cfg["epsilon"]))
        w = op.weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (op.weight.ndim - 1))
        op.weight = _f32(w)
        op.bias = _f32((op.bias - bufs["running_mean"].astype(np.float64)) * scale + p["beta"])


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)
