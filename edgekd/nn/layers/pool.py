"""Pooling layers (valid padding; stride defaults to the pool size). 1-D pools run as height 1."""

from math import prod
from typing import ClassVar

import numpy as np

from ..plan import AVERAGE_POOL_2D, MAX_POOL_2D, LoweredOp, Window
from .base import Layer, register


class _Pool2D(Layer):
    rank = 3
    structural = True
    options: ClassVar[dict] = {"pool_size": 2, "stride": None}

    def geometry(self):
        size = self.int_pair("pool_size")
        return size, self.int_pair("stride", fallback=list(size)), self.in_shape[:2]

    def build(self):
        self.need_rank(self.rank, "(channels-last)")
        self.pool, self.stride, (h, w) = self.geometry()
        if h < self.pool[0] or w < self.pool[1]:
            self.fail(f"pool {list(self.pool)} is larger than its input {[h, w]}")
        ho = (h - self.pool[0]) // self.stride[0] + 1
        wo = (w - self.pool[1]) // self.stride[1] + 1
        self.in_hwc = self.in_shape if self.rank == 3 else (1,) + self.in_shape
        self.out_hwc = (ho, wo, self.in_shape[-1])
        return self.out_hwc if self.rank == 3 else self.out_hwc[1:]

    def flops(self):
        """One per window element read."""
        return prod(self.out_hwc) * self.pool[0] * self.pool[1]

    def lowered_ops(self):
        return (LoweredOp(self.tflite_op, (1,) + tuple(self.in_hwc), (1,) + self.out_hwc,
                          pool=tuple(self.pool), stride=tuple(self.stride)),)

    def sliding_window(self):
        return Window(tuple(self.in_hwc), self.out_hwc, tuple(self.pool), tuple(self.stride))

    def forward(self, x, training):
        n = len(x)
        self.x4 = np.ascontiguousarray(np.asarray(x, np.float32).reshape((n,) + self.in_hwc))
        y4 = self.scratch("y", (n,) + self.out_hwc, training)
        self.pool_forward(y4, training)
        return y4.reshape((n,) + self.out_shape)

    def backward(self, dy):
        n = len(dy)
        dy4 = np.ascontiguousarray(dy.reshape((n,) + self.out_hwc))
        dx4 = self.scratch("dx", (n,) + self.in_hwc, True)
        self.pool_backward(dy4, dx4)
        return dx4.reshape((n,) + self.in_shape)

    def window(self):
        return self.pool[0], self.pool[1], self.stride[0], self.stride[1]


class _Pool1D(_Pool2D):
    rank = 2

    def geometry(self):
        p = self.positive_int("pool_size")
        s = self.cfg["stride"] if self.cfg["stride"] is not None else p
        self.cfg["stride"] = s
        return (1, p), (1, self.positive_int("stride")), (1, self.in_shape[0])


class _Max:
    tflite_op = MAX_POOL_2D

    def pool_forward(self, y4, training):
        if not training:   # inference: the winners are found only if a backward pass asks
            self.K.maxpool2d_max(self.x4, *self.window(), y4)
            self.arg = None
            return
        self.arg = self.scratch("arg", y4.shape, training, np.int64)
        self.K.maxpool2d_forward(self.x4, *self.window(), y4, self.arg)

    def pool_backward(self, dy4, dx4):
        if self.arg is None:
            self.arg = np.empty(dy4.shape, np.int64)
            self.K.maxpool2d_forward(self.x4, *self.window(), np.empty(dy4.shape, np.float32),
                                     self.arg)
        self.K.maxpool2d_backward(self.arg, *self.window(), dy4, dx4)


class _Avg:
    tflite_op = AVERAGE_POOL_2D

    def pool_forward(self, y4, training):
        self.K.avgpool2d_forward(self.x4, *self.window(), y4)

    def pool_backward(self, dy4, dx4):
        self.K.avgpool2d_backward(*self.window(), dy4, dx4)


@register
class MaxPool1D(_Max, _Pool1D):
    type = "maxpool1d"


@register
class MaxPool2D(_Max, _Pool2D):
    type = "maxpool2d"


@register
class AvgPool1D(_Avg, _Pool1D):
    type = "avgpool1d"
