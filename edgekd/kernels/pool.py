"""Max and average pooling over NHWC windows (valid padding); 1-D pooling is height 1."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _windows(x, ph, pw, sh, sw, ho, wo):
    """[N,H,W,C] -> [N,Ho,Wo,C,ph*pw] (a copy; small for pooling)."""
    win = sliding_window_view(x, (ph, pw), axis=(1, 2))[:, ::sh, ::sw][:, :ho, :wo]
    return win.reshape(win.shape[:4] + (ph * pw,))


def _scatter(ph, pw, sh, sw, dy, dx, weight_of):
    """dx = sum over window offsets k of dy * weight_of(k), placed at the inputs of offset k."""
    ho, wo = dy.shape[1], dy.shape[2]
    dx[...] = 0
    for i in range(ph):
        for j in range(pw):
            dx[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] += weight_of(i * pw + j) * dy


def _offset(x, i, j, sh, sw, ho, wo):
    """The inputs at offset (i, j) of every window: a strided view, [N,Ho,Wo,C]."""
    return x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]


def maxpool2d_max(x, ph, pw, sh, sw, out):
    """out = window max (inference: no winners kept for a backward pass). One pass per window
    offset over strided views, with no copy of the windows; returns the views."""
    ho, wo = out.shape[1], out.shape[2]
    views = [_offset(x, i, j, sh, sw, ho, wo) for i in range(ph) for j in range(pw)]
    np.copyto(out, views[0])
    for v in views[1:]:
        np.maximum(out, v, out=out)
    return views


def maxpool2d_forward(x, ph, pw, sh, sw, out, arg):
    """out = window max; arg = the winning offset in each window (first on ties)."""
    views = maxpool2d_max(x, ph, pw, sh, sw, out)
    arg[...] = len(views) - 1
    for k in range(len(views) - 2, -1, -1):   # last to first, so the first maximum wins
        arg[views[k] == out] = k


def maxpool2d_backward(arg, ph, pw, sh, sw, dy, dx):
    _scatter(ph, pw, sh, sw, dy, dx, lambda k: arg == k)


def avgpool2d_forward(x, ph, pw, sh, sw, out):
    np.mean(_windows(x, ph, pw, sh, sw, out.shape[1], out.shape[2]), axis=-1, out=out)


def avgpool2d_backward(ph, pw, sh, sw, dy, dx):
    scale = np.float32(1.0 / (ph * pw))
    _scatter(ph, pw, sh, sw, dy, dx, lambda k: scale)
