"""Convolutions, channels-last, with a fused activation. conv1d runs as a height-1 conv2d."""

from typing import ClassVar

import numpy as np

from ...kernels import activations
from ...kernels.conv import conv2d_backward, conv2d_forward, out_size, same_padding
from ..init import kernel_init
from .base import Layer, register


@register
class Conv2D(Layer):
    type = "conv2d"
    rank = 3
    param_order = ("kernel", "bias")
    options: ClassVar[dict] = {"filters": None, "kernel_size": None, "stride": 1, "padding": "valid",
               "activation": "none"}

    def geometry(self):
        """(kernel hw, stride hw, input hw) of the equivalent 2-D convolution."""
        return (self.int_pair("kernel_size"), self.int_pair("stride"),
                self.in_shape[:2])

    def build(self):
        self.need_rank(self.rank, "(channels-last)")
        self.filters = self.positive_int("filters")
        self.act = self.choice("activation", activations.NAMES)
        self.padding = self.choice("padding", ("valid", "same"))
        (kh, kw), self.stride, (h, w) = self.geometry()
        self.pads = [same_padding(s, k, st) if self.padding == "same" else (0, 0)
                     for s, k, st in zip((h, w), (kh, kw), self.stride)]
        hp, wp = h + sum(self.pads[0]), w + sum(self.pads[1])
        if hp < kh or wp < kw:
            self.fail(f"kernel {[kh, kw]} is larger than its input {[h, w]}")
        cin = self.in_shape[-1]
        self.add_param("kernel", (kh, kw, cin, self.filters))
        self.add_param("bias", (self.filters,))
        ho, wo = out_size(hp, kh, self.stride[0]), out_size(wp, kw, self.stride[1])
        return self.out_hw(ho, wo) + (self.filters,)

    def out_hw(self, ho, wo):
        return (ho, wo)

    def kernel_hwio(self):
        return self.params["kernel"]

    def init(self, rng):
        k = self.params["kernel"]
        receptive = int(np.prod(k.shape[:-2]))
        fan_in, fan_out = receptive * k.shape[-2], receptive * k.shape[-1]
        k[...] = kernel_init(rng, k.shape, fan_in, fan_out, self.act)
        self.params["bias"][...] = 0

    def to_nhwc(self, x):
        return x

    def forward(self, x, training):
        x4 = self.to_nhwc(x)
        (pt, pb), (pl, pr) = self.pads
        if pt or pb or pl or pr:
            x4 = np.pad(x4, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        self.padded_shape = x4.shape
        y, self.cols = conv2d_forward(x4, self.kernel_hwio(), self.params["bias"], self.stride)
        self.y = activations.forward(self.act, y.reshape((x.shape[0],) + self.out_shape))
        return self.y

    def backward(self, dy):
        dz = activations.backward(self.act, self.y, dy)
        dz4 = dz.reshape((dz.shape[0],) + self.padded_out())
        dx, dw, db = conv2d_backward(self.padded_shape, self.cols, self.kernel_hwio(),
                                     self.stride, dz4)
        self.cols = None
        self.grads["kernel"][...] = dw.reshape(self.grads["kernel"].shape)
        self.grads["bias"][...] = db
        (pt, pb), (pl, pr) = self.pads
        dx = dx[:, pt:dx.shape[1] - pb, pl:dx.shape[2] - pr, :]
        return dx.reshape((dx.shape[0],) + self.in_shape)

    def padded_out(self):
        return self.out_shape


@register
class Conv1D(Conv2D):
    """Input [length, channels]; kernel stored [k, cin, filters] as Keras/TFLite users expect."""
    type = "conv1d"
    rank = 2

    def geometry(self):
        k, s = self.positive_int("kernel_size"), self.positive_int("stride")
        return (1, k), (1, s), (1, self.in_shape[0])

    def build(self):
        out = super().build()
        _, kw, cin, f = self.params["kernel"].shape
        self.add_param("kernel", (kw, cin, f))
        return out

    def out_hw(self, ho, wo):
        return (wo,)

    def padded_out(self):
        return (1,) + self.out_shape

    def kernel_hwio(self):
        return self.params["kernel"][None]

    def to_nhwc(self, x):
        return x[:, None]
