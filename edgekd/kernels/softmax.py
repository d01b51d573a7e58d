"""Stable softmax and log-softmax over the last axis (log-sum-exp with the row max removed).
The ufuncs' reduce is what .max()/.sum() call, without their Python wrappers."""

import numpy as np


def log_softmax(z):
    z = z - np.maximum.reduce(z, axis=-1, keepdims=True)
    return z - np.log(np.add.reduce(np.exp(z), axis=-1, keepdims=True))


def softmax(z):
    e = np.exp(z - np.maximum.reduce(z, axis=-1, keepdims=True))
    return e / np.add.reduce(e, axis=-1, keepdims=True)
