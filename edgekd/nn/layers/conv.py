"""Convolutions, channels-last, with a fused activation. conv1d runs as a height-1 conv2d."""

from typing import ClassVar

import numpy as np

from ...kernels.activations import CODES, NAMES
from ...kernels.conv import out_size, same_padding
from ..init import INITS, bias_init, kernel_init
from ..plan import CONV_2D, LoweredOp, Window, with_activation
from .base import Layer, register


class _Conv(Layer):
    """A 2-D convolution of rank-`rank` input; conv1d is its height-1 case."""
    param_order = ("kernel", "bias")
    options: ClassVar[dict] = {"filters": None, "kernel_size": None, "stride": 1,
                               "padding": "valid", "activation": "none", "init": "he_glorot"}
    width_key = "filters"

    def geometry(self):
        """(kernel hw, stride hw, input hw) of the equivalent 2-D convolution."""
        return self.int_pair("kernel_size"), self.int_pair("stride"), self.in_shape[:2]

    def build(self):
        self.need_rank(self.rank, "(channels-last)")
        self.filters = self.positive_int("filters")
        self.act = self.choice("activation", NAMES)
        self.code = CODES[self.act]
        self.padding = self.choice("padding", ("valid", "same"))
        self.init_name = self.choice("init", INITS)
        (kh, kw), self.stride, (h, w) = self.geometry()
        self.pads = [same_padding(s, k, st) if self.padding == "same" else (0, 0)
                     for s, k, st in zip((h, w), (kh, kw), self.stride)]
        hp, wp = h + sum(self.pads[0]), w + sum(self.pads[1])
        if hp < kh or wp < kw:
            self.fail(f"kernel {[kh, kw]} is larger than its input {[h, w]}")
        self.in_hwc = self.in_shape if self.rank == 3 else (1,) + self.in_shape
        self.padded_hwc = (hp, wp, self.in_shape[-1])
        self.kernel_hw = (kh, kw)
        self.out_hwc = (out_size(hp, kh, self.stride[0]), out_size(wp, kw, self.stride[1]), self.filters)
        self.add_param("kernel", self.kernel_shape(kh, kw, self.in_shape[-1]))
        self.add_param("bias", (self.filters,))
        return self.out_hwc if self.rank == 3 else self.out_hwc[1:]

    def column(self):
        """Elements of one im2col column: kh * kw * cin."""
        return self.kernel_hw[0] * self.kernel_hw[1] * self.in_shape[-1]

    def flops(self):
        positions = self.out_hwc[0] * self.out_hwc[1]
        outs = self.filters * positions
        macs = self.column() * self.filters * positions
        return 2 * macs + outs + (outs if self.act != "none" else 0)

    def scratch_elems(self):
        """The im2col matrix the numpy kernel materialises and keeps: a column per output
        position."""
        return self.column() * self.out_hwc[0] * self.out_hwc[1]

    def lowered_ops(self):
        conv = LoweredOp(CONV_2D, (1,) + tuple(self.in_hwc), (1,) + self.out_hwc,
                         stride=tuple(self.stride), padding=self.padding.upper(),
                         weight=("kernel",) + self.tflite_kernel(), bias="bias")
        return with_activation(conv, self.act)

    def sliding_window(self):
        return Window(tuple(self.in_hwc), self.out_hwc, self.kernel_hw, tuple(self.stride),
                      self.pads[0] + self.pads[1])

    def init(self, rng):
        k = self.params["kernel"]
        receptive = int(np.prod(k.shape[:-2]))
        fan_in, fan_out = receptive * k.shape[-2], receptive * k.shape[-1]
        k[...] = kernel_init(rng, k.shape, fan_in, fan_out, self.act, self.init_name)
        self.params["bias"][...] = bias_init(rng, (self.filters,), fan_in, self.init_name)

    def forward(self, x, training):
        n = len(x)
        (pt, pb), (pl, pr) = self.pads
        x4 = np.asarray(x, np.float32).reshape((n,) + self.in_hwc)
        if pt or pb or pl or pr:
            xp = self.scratch("xp", (n,) + self.padded_hwc, training)
            xp[...] = 0
            xp[:, pt:pt + x4.shape[1], pl:pl + x4.shape[2]] = x4
        else:
            xp = np.ascontiguousarray(x4)
        self.xp = xp
        self.y4 = self.scratch("y", (n,) + self.out_hwc, training)
        self.K.conv2d_forward(xp, self.hwio(self.params["kernel"]), self.params["bias"],
                              self.stride[0], self.stride[1], self.code, self.y4)
        return self.y4.reshape((n,) + self.out_shape)

    def backward(self, dy):
        n = len(dy)
        dz = self.scratch("dz", (n,) + self.out_hwc, True)
        np.copyto(dz, dy.reshape(dz.shape))
        dxp = self.scratch("dxp", self.xp.shape, True) if self.need_dx else None
        self.K.conv2d_backward(self.xp, self.hwio(self.params["kernel"]), self.y4, dz,
                               self.stride[0], self.stride[1], self.code,
                               self.hwio(self.grads["kernel"]), self.grads["bias"], dxp)
        if dxp is None:
            return None
        (pt, pb), (pl, pr) = self.pads
        dx = dxp[:, pt:dxp.shape[1] - pb, pl:dxp.shape[2] - pr, :]
        return dx.reshape((n,) + self.in_shape)


@register
class Conv1D(_Conv):
    """Input [length, channels]; kernel stored [k, cin, filters] as Keras/TFLite users expect."""
    type = "conv1d"
    rank = 2

    def geometry(self):
        k, s = self.positive_int("kernel_size"), self.positive_int("stride")
        return (1, k), (1, s), (1, self.in_shape[0])

    def kernel_shape(self, kh, kw, cin):
        return (kw, cin, self.filters)

    def hwio(self, a):
        return a[None]

    def tflite_kernel(self):
        """(transpose axes, shape) taking the stored kernel to TFLite's OHWI."""
        k, cin, f = self.param_shapes["kernel"]
        return (2, 0, 1), (f, 1, k, cin)


@register
class Conv2D(_Conv):
    type = "conv2d"
    rank = 3

    def kernel_shape(self, kh, kw, cin):
        return (kh, kw, cin, self.filters)

    def hwio(self, a):
        """The kernel (or its gradient) as a [kh, kw, cin, f] view."""
        return a

    def tflite_kernel(self):
        kh, kw, cin, f = self.param_shapes["kernel"]
        return (3, 0, 1, 2), (f, kh, kw, cin)
