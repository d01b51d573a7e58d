"""Pointwise activations, fused into the layer before them. Both work in place: forward on
the pre-activation, backward on the incoming gradient (using the forward *output* y, which is
all each one needs)."""

import numpy as np

NAMES = ("relu", "relu6", "tanh", "none")
CODES = {"none": 0, "relu": 1, "relu6": 2, "tanh": 3}


def activate_(z, code):
    if code == 1:
        np.maximum(z, 0, out=z)
    elif code == 2:
        np.clip(z, 0, 6, out=z)
    elif code == 3:
        np.tanh(z, out=z)


def activation_grad_(y, dy, code):
    if code == 1:
        dy *= y > 0
    elif code == 2:
        dy *= (y > 0) & (y < 6)
    elif code == 3:
        dy *= 1 - y * y
