"""2-D convolution, NHWC input and HWIO kernel (TFLite's layout), by im2col and one matmul.

conv1d is this with height 1. Padding is applied by the caller (see `same_padding`), so the
kernel only ever sees a 'valid' convolution.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def same_padding(size, kernel, stride):
    """TensorFlow's SAME padding for one axis: (before, after), the extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def out_size(size, kernel, stride):
    return (size - kernel) // stride + 1


def im2col(x, kh, kw, sh, sw):
    """[N,H,W,C] -> [N*Ho*Wo, kh*kw*C], columns ordered (kh, kw, C) to match an HWIO kernel."""
    n, c = x.shape[0], x.shape[3]
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # N,Ho,Wo,C,kh,kw
    ho, wo = win.shape[1], win.shape[2]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * c), ho, wo


def conv2d_forward(x, w, b, stride):
    """Valid convolution. Returns (y [N,Ho,Wo,F], cols) where cols is kept for backward."""
    kh, kw, c, f = w.shape
    cols, ho, wo = im2col(x, kh, kw, stride[0], stride[1])
    y = cols @ w.reshape(kh * kw * c, f)
    y += b
    return y.reshape(x.shape[0], ho, wo, f), cols


def conv2d_backward(x_shape, cols, w, stride, dy):
    """Returns (dx, dw, db) for `conv2d_forward`; dx has the (padded) input's shape."""
    kh, kw, c, f = w.shape
    sh, sw = stride
    n, ho, wo, _ = dy.shape
    dy2 = dy.reshape(-1, f)
    dw = (cols.T @ dy2).reshape(w.shape)
    db = dy2.sum(axis=0)
    dcols = (dy2 @ w.reshape(kh * kw * c, f).T).reshape(n, ho, wo, kh, kw, c)
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] += dcols[:, :, :, i, j, :]
    return dx, dw, db
