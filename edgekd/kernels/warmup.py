"""Calls every kernel once on tiny arrays with the argument types training uses, so numba
compiles (or loads from its cache) everything before the first real step."""

import numpy as np


def run(K):
    f32 = np.float32
    x, w, b = np.ones((2, 3), f32), np.ones((3, 4), f32), np.zeros(4, f32)
    y = np.empty((2, 4), f32)
    K.dense_forward(x, w, b, 1, y)
    for dx in (np.empty((2, 3), f32), None):
        K.dense_backward(x, w, y, np.ones((2, 4), f32), 1, np.empty((3, 4), f32), np.empty(4, f32), dx)
    x4, w4 = np.ones((1, 4, 4, 2), f32), np.ones((2, 2, 2, 3), f32)
    y4 = np.empty((1, 3, 3, 3), f32)
    K.conv2d_forward(x4, w4, np.zeros(3, f32), 1, 1, 1, y4)
    for dx in (np.empty_like(x4), None):
        K.conv2d_backward(x4, w4, y4, np.ones_like(y4), 1, 1, 1, np.empty_like(w4),
                          np.empty(3, f32), dx)
    p4, arg = np.empty((1, 2, 2, 2), f32), np.empty((1, 2, 2, 2), np.int64)
    K.maxpool2d_forward(x4, 2, 2, 2, 2, p4, arg)
    K.maxpool2d_max(x4, 2, 2, 2, 2, p4)
    K.maxpool2d_backward(arg, 2, 2, 2, 2, np.ones_like(p4), np.empty_like(x4))
    K.avgpool2d_forward(x4, 2, 2, 2, 2, p4)
    K.avgpool2d_backward(2, 2, 2, 2, np.ones_like(p4), np.empty_like(x4))
    s = np.zeros((2, 3), f32)
    K.kd_loss_grad(s, s, np.zeros(2, np.int64), 4.0, 0.9, np.empty_like(s), np.empty(2, f32))
    p = np.zeros(5, f32)
    K.sgd_update(p, p.copy(), p.copy(), 0.1, 0.9, 0.0, False, True)
    K.adam_update(p, p.copy(), p.copy(), p.copy(), 0.1, 0.9, 0.999, 1e-8, 0.0, 1, False)
