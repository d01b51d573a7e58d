"""Weight initialisation, chosen per layer by its spec key "init":

- "he_glorot" (the default): He normal for ReLU-family activations, Glorot uniform otherwise
  (Keras's choices), biases zero.
- "torch_uniform": what PyTorch's nn.Linear / nn.Conv* draw: kernel U(-b, b) with
  b = 1/sqrt(fan_in) (Kaiming-uniform with a = sqrt(5)), bias U(-b, b) with the same bound,
  so a recipe tuned in PyTorch starts here where it started there.
"""

import numpy as np

INITS = ("he_glorot", "torch_uniform")


def kernel_init(rng, shape, fan_in, fan_out, activation, init="he_glorot"):
    if init == "torch_uniform":
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)
    if activation in ("relu", "relu6"):
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    else:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, size=shape)
    return w.astype(np.float32)


def bias_init(rng, shape, fan_in, init="he_glorot"):
    if init == "torch_uniform":
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return np.zeros(shape, np.float32)
