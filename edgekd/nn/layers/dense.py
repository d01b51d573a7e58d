"""Fully connected layer with a fused activation: y = act(x @ kernel + bias)."""

from typing import ClassVar

from ...kernels import activations
from ..init import kernel_init
from .base import Layer, register


@register
class Dense(Layer):
    type = "dense"
    param_order = ("kernel", "bias")
    options: ClassVar[dict] = {"units": None, "activation": "none"}

    def build(self):
        self.need_rank(1, "(add a flatten layer before dense)")
        units = self.positive_int("units")
        self.act = self.choice("activation", activations.NAMES)
        self.add_param("kernel", (self.in_shape[0], units))
        self.add_param("bias", (units,))
        return (units,)

    def init(self, rng):
        fan_in, units = self.params["kernel"].shape
        self.params["kernel"][...] = kernel_init(rng, (fan_in, units), fan_in, units, self.act)
        self.params["bias"][...] = 0

    def forward(self, x, training):
        self.x = x
        self.y = activations.forward(self.act, x @ self.params["kernel"] + self.params["bias"])
        return self.y

    def backward(self, dy):
        dz = activations.backward(self.act, self.y, dy)
        self.grads["kernel"][...] = self.x.T @ dz
        self.grads["bias"][...] = dz.sum(axis=0)
        return dz @ self.params["kernel"].T
