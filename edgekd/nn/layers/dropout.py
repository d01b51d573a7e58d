"""Inverted dropout: scales kept units by 1/(1-rate) in training, identity at inference.

Its mask comes from the model's own seeded generator, so a resumed run draws the same masks.
"""

from typing import ClassVar

import numpy as np

from .base import Layer, register


@register
class Dropout(Layer):
    type = "dropout"
    options: ClassVar[dict] = {"rate": 0.5}

    def build(self):
        r = self.cfg["rate"]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
            self.fail(f"rate must be a number in [0, 1), got {r!r}")
        self.rate = float(r)
        self.rng = None  # set by the model
        return self.in_shape

    def lowered_ops(self):
        return ()   # the identity at inference

    def forward(self, x, training):
        if not training or self.rate == 0:
            self.mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.rate
        self.mask = keep * np.float32(1.0 / (1.0 - self.rate))
        return x * self.mask

    def backward(self, dy):
        return dy if self.mask is None else dy * self.mask
