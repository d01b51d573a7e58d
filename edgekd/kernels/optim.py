"""Optimizer updates with PyTorch's rules, in place on a parameter vector and its state."""

import numpy as np


def sgd_update(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    d = g + weight_decay * p if weight_decay else g
    if momentum:
        if first:
            buf[...] = d
        else:
            buf *= momentum
            buf += d
        d = d + momentum * buf if nesterov else buf
    p -= lr * d


def adam_update(p, g, m, v, lr, b1, b2, eps, weight_decay, step, decoupled):
    if decoupled:
        p *= 1 - lr * weight_decay
        d = g
    else:
        d = g + weight_decay * p if weight_decay else g
    m *= b1
    m += (1 - b1) * d
    v *= b2
    v += (1 - b2) * d * d
    c1 = 1 - b1 ** step
    c2 = np.sqrt(1 - b2 ** step)
    p -= (lr / c1) * (m / (np.sqrt(v) / c2 + eps))
