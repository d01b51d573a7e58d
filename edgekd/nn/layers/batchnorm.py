"""Batch normalisation over every axis but the channel axis (the last), as PyTorch computes it.

Training uses the batch's statistics and updates running ones (unbiased variance, momentum
like PyTorch's); inference uses the running ones, which export folds into the layer before.
"""

from typing import ClassVar

import numpy as np

from .base import Layer, register


@register
class BatchNorm(Layer):
    type = "batchnorm"
    param_order = ("gamma", "beta", "running_mean", "running_var")
    options: ClassVar[dict] = {"momentum": 0.1, "epsilon": 1e-5}

    def build(self):
        for key, lo, hi in (("momentum", 0, 1), ("epsilon", 0, 1)):
            v = self.cfg[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v <= hi:
                self.fail(f"{key} must be a number in ({lo}, {hi}], got {v!r}")
        c = self.in_shape[-1]
        self.add_param("gamma", (c,))
        self.add_param("beta", (c,))
        self.add_buffer("running_mean", (c,), 0)
        self.add_buffer("running_var", (c,), 1)
        return self.in_shape

    def flops(self):
        """Scale and shift of every element (the running statistics folded)."""
        return 2 * int(np.prod(self.in_shape))

    def lowered_ops(self):
        return ()

    folds = True

    def fold(self, weight, bias):
        """(weight, bias) of the dense/conv op before it (output channels first) with this
        layer's inference map folded in: scaled by gamma/sqrt(var+eps), bias shifted."""
        p, bufs = self.params, self.buffers
        scale = p["gamma"].astype(np.float64) / np.sqrt(
            bufs["running_var"].astype(np.float64) + float(self.cfg["epsilon"]))
        w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        b = (bias - bufs["running_mean"].astype(np.float64)) * scale + p["beta"]
        return np.ascontiguousarray(w, np.float32), np.ascontiguousarray(b, np.float32)

    def init(self, rng):
        self.params["gamma"][...] = 1
        self.params["beta"][...] = 0
        self.buffers["running_mean"][...] = 0
        self.buffers["running_var"][...] = 1

    def forward(self, x, training):
        c = x.shape[-1]
        x2 = x.reshape(-1, c)
        eps = np.float32(self.cfg["epsilon"])
        if training:
            m = x2.shape[0]
            mean = x2.mean(axis=0)
            var = x2.var(axis=0)
            mom = np.float32(self.cfg["momentum"])
            unbiased = var * np.float32(m / max(m - 1, 1))
            self.buffers["running_mean"] *= 1 - mom
            self.buffers["running_mean"] += mom * mean
            self.buffers["running_var"] *= 1 - mom
            self.buffers["running_var"] += mom * unbiased
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        self.training = training
        self.inv_std = 1.0 / np.sqrt(var + eps)
        self.xhat = (x2 - mean) * self.inv_std
        return (self.xhat * self.params["gamma"] + self.params["beta"]).reshape(x.shape)

    def backward(self, dy):
        c = dy.shape[-1]
        dy2 = dy.reshape(-1, c)
        self.grads["gamma"][...] = (dy2 * self.xhat).sum(axis=0)
        self.grads["beta"][...] = dy2.sum(axis=0)
        dxhat = dy2 * self.params["gamma"]
        if not self.training:  # fixed statistics: a per-channel affine map
            return (dxhat * self.inv_std).reshape(dy.shape)
        dx = self.inv_std * (dxhat - dxhat.mean(axis=0) - self.xhat * (dxhat * self.xhat).mean(axis=0))
        return dx.reshape(dy.shape)
