"""Fully connected layer with its activation fused, writing into caller-owned buffers.

np.dot, not np.matmul: the same sgemm, with a fraction of matmul's per-call cost at a device's
batch sizes (and an error, not a silent copy, if an output is not contiguous)."""

import numpy as np

from .activations import activate_, activation_grad_


def dense_forward(x, w, b, code, out):
    """out = act(x @ w + b)."""
    np.dot(x, w, out)
    out += b
    activate_(out, code)


def dense_backward(x, w, y, dy, code, dw, db, dx):
    """Fills dw, db and (if dx is not None) dx; dy is overwritten with d(pre-activation)."""
    activation_grad_(y, dy, code)
    np.dot(x.T, dy, dw)
    np.add.reduce(dy, axis=0, out=db)
    if dx is not None:
        np.dot(dy, w.T, dx)
