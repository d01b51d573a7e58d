"""Pooling layers (valid padding; stride defaults to the pool size). 1-D pools run as height 1."""

from typing import ClassVar

from ...kernels import pool
from .base import Layer, register


class _Pool2D(Layer):
    rank = 3
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
        return self.out_hw(ho, wo) + (self.in_shape[-1],)

    def out_hw(self, ho, wo):
        return (ho, wo)

    def to_nhwc(self, x):
        return x.reshape((x.shape[0],) + self.nhwc_shape())

    def nhwc_shape(self):
        return self.in_shape if self.rank == 3 else (1,) + self.in_shape

    def forward(self, x, training):
        self.x4_shape = (x.shape[0],) + self.nhwc_shape()
        y = self.pool_forward(self.to_nhwc(x))
        return y.reshape((x.shape[0],) + self.out_shape)

    def backward(self, dy):
        dy4 = dy.reshape((dy.shape[0],) + self.nhwc_out())
        return self.pool_backward(dy4).reshape((dy.shape[0],) + self.in_shape)

    def nhwc_out(self):
        return self.out_shape if self.rank == 3 else (1,) + self.out_shape


class _Pool1D(_Pool2D):
    rank = 2

    def geometry(self):
        p = self.positive_int("pool_size")
        s = self.cfg["stride"] if self.cfg["stride"] is not None else p
        self.cfg["stride"] = s
        return (1, p), (1, self.positive_int("stride")), (1, self.in_shape[0])

    def out_hw(self, ho, wo):
        return (wo,)


class _Max:
    def pool_forward(self, x4):
        y, self.arg = pool.maxpool2d_forward(x4, self.pool, self.stride)
        return y

    def pool_backward(self, dy4):
        return pool.maxpool2d_backward(self.x4_shape, self.arg, self.pool, self.stride, dy4)


class _Avg:
    def pool_forward(self, x4):
        return pool.avgpool2d_forward(x4, self.pool, self.stride)

    def pool_backward(self, dy4):
        return pool.avgpool2d_backward(self.x4_shape, self.pool, self.stride, dy4)


@register
class MaxPool2D(_Max, _Pool2D):
    type = "maxpool2d"


@register
class MaxPool1D(_Max, _Pool1D):
    type = "maxpool1d"


@register
class AvgPool1D(_Avg, _Pool1D):
    type = "avgpool1d"
