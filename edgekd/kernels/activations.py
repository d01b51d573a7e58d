"""Pointwise activations, fused into the layer before them. Both work in place: forward on
the pre-activation, backward on the incoming gradient (using the forward *output* y, which is
all each one needs)."""

import numpy as np

NAMES = ("relu", "relu6", "tanh", "none")
NONE, RELU, RELU6, TANH = 0, 1, 2, 3   # the codes kernels, fused steps and boards use
CODES = {"none": NONE, "relu": RELU, "relu6": RELU6, "tanh": TANH}


def activate_(z, code):
    if code == RELU:
        np.maximum(z, 0, out=z)
    elif code == RELU6:
        np.clip(z, 0, 6, out=z)
    elif code == TANH:
        np.tanh(z, out=z)


def activation_grad_(y, dy, code):
    if code == RELU:
        dy *= y > 0
    elif code == RELU6:
        dy *= (y > 0) & (y < 6)
    elif code == TANH:
        dy *= 1 - y * y
