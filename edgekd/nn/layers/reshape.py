"""Layers that only move or average values: flatten and global average pooling."""

import numpy as np

from ..plan import MEAN, RESHAPE, LoweredOp
from .base import Layer, register


@register
class GlobalAvgPool(Layer):
    """Mean over every spatial axis: [L, C] or [H, W, C] -> [C]."""
    type = "global_avgpool"
    structural = True

    def build(self):
        if len(self.in_shape) < 2:
            self.fail(f"needs a spatial input [.., channels], got shape {list(self.in_shape)}")
        self.axes = tuple(range(1, len(self.in_shape)))
        self.count = int(np.prod(self.in_shape[:-1]))
        return (self.in_shape[-1],)

    def flops(self):
        """One per input element."""
        return int(np.prod(self.in_shape))

    def lowered_ops(self):
        """MEAN over every spatial axis of the tensor as exported (a 1-D input may be the
        height-1 view of the 2-D op before it)."""
        return (LoweredOp(MEAN, None, (1,) + self.out_shape),)

    def forward(self, x, training):
        return x.mean(axis=self.axes, dtype=np.float32)

    def backward(self, dy):
        shape = (dy.shape[0],) + (1,) * (len(self.in_shape) - 1) + (dy.shape[1],)
        g = (dy / np.float32(self.count)).reshape(shape)
        return np.broadcast_to(g, (dy.shape[0],) + self.in_shape).copy()


@register
class Flatten(Layer):
    type = "flatten"
    structural = True

    def build(self):
        return (int(np.prod(self.in_shape)),)

    def kept_elems(self):
        return 0   # a view

    def lowered_ops(self):
        return (LoweredOp(RESHAPE, None, (1,) + self.out_shape),)

    def forward(self, x, training):
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape((dy.shape[0],) + self.in_shape)
