"""Fully connected layer with its activation fused, writing into caller-owned buffers."""

import numpy as np

from .activations import activate_, activation_grad_


def dense_forward(x, w, b, code, out):
    """out = act(x @ w + b)."""
    np.matmul(x, w, out=out)
    out += b
    activate_(out, code)


def dense_backward(x, w, y, dy, code, dw, db, dx):
    """Fills dw, db and (if dx is not None) dx; dy is overwritten with d(pre-activation)."""
    activation_grad_(y, dy, code)
    np.matmul(x.T, dy, out=dw)
    np.add.reduce(dy, axis=0, out=db)
    if dx is not None:
        np.matmul(dy, w.T, out=dx)
