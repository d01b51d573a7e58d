"""Weight initialisation: He for ReLU-family activations, Glorot otherwise (Keras defaults)."""

import numpy as np


def kernel_init(rng, shape, fan_in, fan_out, activation):
    if activation in ("relu", "relu6"):
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    else:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, size=shape)
    return w.astype(np.float32)
