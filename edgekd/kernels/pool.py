"""Max and average pooling over NHWC windows (valid padding); 1-D pooling is height 1."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _windows(x, pool, stride):
    """[N,H,W,C] -> [N,Ho,Wo,C,ph*pw] (a copy; small for pooling)."""
    ph, pw = pool
    win = sliding_window_view(x, (ph, pw), axis=(1, 2))[:, ::stride[0], ::stride[1]]
    return win.reshape(win.shape[:4] + (ph * pw,))


def _scatter(x_shape, pool, stride, dy, weight_of):
    """Adds dy * weight_of(k) into the input positions of window offset k, for every k."""
    ph, pw = pool
    sh, sw = stride
    ho, wo = dy.shape[1], dy.shape[2]
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for i in range(ph):
        for j in range(pw):
            dx[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] += weight_of(i * pw + j) * dy
    return dx


def maxpool2d_forward(x, pool, stride):
    """Returns (y, argmax) with argmax the winning offset in each window (first on ties)."""
    win = _windows(x, pool, stride)
    arg = win.argmax(axis=-1)
    return np.take_along_axis(win, arg[..., None], axis=-1)[..., 0], arg


def maxpool2d_backward(x_shape, arg, pool, stride, dy):
    return _scatter(x_shape, pool, stride, dy, lambda k: arg == k)


def avgpool2d_forward(x, pool, stride):
    return _windows(x, pool, stride).mean(axis=-1, dtype=np.float32)


def avgpool2d_backward(x_shape, pool, stride, dy):
    scale = np.float32(1.0 / (pool[0] * pool[1]))
    return _scatter(x_shape, pool, stride, dy, lambda k: scale)
