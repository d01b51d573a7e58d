"""Fully connected layer with a fused activation: y = act(x @ kernel + bias)."""

from typing import ClassVar

import numpy as np

from ...kernels.activations import CODES, NAMES
from ..init import INITS, bias_init, kernel_init
from ..plan import FULLY_CONNECTED, LoweredOp, with_activation
from .base import Layer, register


@register
class Dense(Layer):
    type = "dense"
    param_order = ("kernel", "bias")
    options: ClassVar[dict] = {"units": None, "activation": "none", "init": "he_glorot"}
    width_key = "units"

    def build(self):
        self.need_rank(1, "(add a flatten layer before dense)")
        units = self.positive_int("units")
        self.act = self.choice("activation", NAMES)
        self.code = CODES[self.act]
        self.init_name = self.choice("init", INITS)
        self.add_param("kernel", (self.in_shape[0], units))
        self.add_param("bias", (units,))
        return (units,)

    def flops(self):
        n_in, units = self.in_shape[0], self.out_shape[0]
        return 2 * n_in * units + units + (units if self.act != "none" else 0)

    def lowered_ops(self):
        n_in, units = self.in_shape[0], self.out_shape[0]
        fc = LoweredOp(FULLY_CONNECTED, (1, n_in), (1, units),
                       weight=("kernel", (1, 0), (units, n_in)), bias="bias")
        return with_activation(fc, self.act)

    def init(self, rng):
        fan_in, units = self.params["kernel"].shape
        self.params["kernel"][...] = kernel_init(rng, (fan_in, units), fan_in, units, self.act,
                                                 self.init_name)
        self.params["bias"][...] = bias_init(rng, (units,), fan_in, self.init_name)

    def forward(self, x, training):
        self.x = np.ascontiguousarray(x, np.float32)
        self.y = self.scratch("y", (len(x),) + self.out_shape, training)
        self.K.dense_forward(self.x, self.params["kernel"], self.params["bias"], self.code, self.y)
        return self.y

    def backward(self, dy):
        if self.code:   # the activation's gradient is applied in place: keep dy intact
            dz = self.scratch("dz", dy.shape, True)
            np.copyto(dz, dy)
        else:           # no activation: the kernel only reads dy
            dz = dy
        dx = self.scratch("dx", self.x.shape, True) if self.need_dx else None
        self.K.dense_backward(self.x, self.params["kernel"], self.y, dz, self.code,
                              self.grads["kernel"], self.grads["bias"], dx)
        return dx
