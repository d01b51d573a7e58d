"""2-D convolution, NHWC input and HWIO kernel (TFLite's layout), by im2col and one matmul.

conv1d is this with height 1. The caller pads (see `same_padding`), so the kernel only ever
sees a 'valid' convolution.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .activations import activate_, activation_grad_


def same_padding(size, kernel, stride):
    """TensorFlow's SAME padding for one axis: (before, after), the extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def out_size(size, kernel, stride):
    return (size - kernel) // stride + 1


def im2col(x, kh, kw, sh, sw, ho, wo):
    """[N,H,W,C] -> [N*Ho*Wo, kh*kw*C], columns ordered (kh, kw, C) like an HWIO kernel."""
    # the strided window view built directly: sliding_window_view's checks cost ~10 Python
    # calls per use, a real share of a small step on an in-order core (benchmarks/device_cost.py)
    # (as_strided itself costs a dozen Python-level steps: a C-contiguous input, the usual
    # case, gets its window view from the ndarray constructor in one call)
    n, _, _, c = x.shape
    s0, s1, s2, s3 = x.strides
    shape, strides = (n, ho, wo, kh, kw, c), (s0, s1 * sh, s2 * sw, s1, s2, s3)
    if x.flags.c_contiguous:
        win = np.ndarray(shape, x.dtype, x, 0, strides)
    else:
        win = as_strided(x, shape, strides, writeable=False)
    return win.reshape(n * ho * wo, kh * kw * c)


def conv2d_forward(x, w, b, sh, sw, code, out):
    """out [N,Ho,Wo,F] = act(conv(x, w) + b)."""
    kh, kw, c, f = w.shape
    _, ho, wo, _ = out.shape
    np.dot(im2col(x, kh, kw, sh, sw, ho, wo), w.reshape(kh * kw * c, f), out.reshape(-1, f))
    out += b
    activate_(out, code)


def conv2d_backward(x, w, y, dy, sh, sw, code, dw, db, dx):
    """Fills dw, db and (if dx is not None) dx, the gradient of the padded input."""
    kh, kw, c, f = w.shape
    n, ho, wo, _ = dy.shape
    activation_grad_(y, dy, code)
    dy2 = dy.reshape(-1, f)
    np.dot(im2col(x, kh, kw, sh, sw, ho, wo).T, dy2, dw.reshape(kh * kw * c, f))
    np.add.reduce(dy2, axis=0, out=db)
    if dx is None:
        return
    dcols = np.dot(dy2, w.reshape(kh * kw * c, f).T).reshape(n, ho, wo, kh, kw, c)
    dx[...] = 0
    for i in range(kh):
        for j in range(kw):
            dx[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] += dcols[:, :, :, i, j, :]
