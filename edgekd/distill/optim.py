"""Optimizers with PyTorch's update rules, updating parameters in place through the active
kernel backend (one pass per parameter vector; a model hands over one flat vector).

Each keeps its state as named arrays (`state()` / `load_state()`) so a checkpoint can carry it
and a resumed run continues bit for bit.
"""

import math

import numpy as np

from ..errors import EdgekdError
from ..kernels.aligned import aligned_zeros
from ..kernels.backend import active


class Optimizer:
    slots = ()  # per-parameter state arrays

    def __init__(self, pairs, lr, weight_decay=0.0):
        self.pairs = pairs          # [(param, grad)] in the model's canonical order
        self.lr = float(lr)
        self.wd = float(weight_decay)
        self.t = 0
        self.bufs = {s: [aligned_zeros(p.shape, p.dtype) for p, _ in pairs] for s in self.slots}

    def step(self):
        self.t += 1
        for i, (p, g) in enumerate(self.pairs):
            self.update(i, p, g)

    def state(self):
        out = {"optim.t": np.array(self.t, np.int64)}
        for s, arrs in self.bufs.items():
            out.update({f"optim.{s}.{i}": a for i, a in enumerate(arrs)})
        return out

    def load_state(self, arrays):
        try:
            self.t = int(arrays["optim.t"])
            for s, arrs in self.bufs.items():
                for i, a in enumerate(arrs):
                    a[...] = arrays[f"optim.{s}.{i}"]
        except (KeyError, ValueError) as e:
            raise EdgekdError(f"checkpoint: optimizer state does not match ({e})") from None


class SGD(Optimizer):
    """SGD with momentum (PyTorch's dampening-free form) and optional Nesterov."""
    slots = ("momentum",)

    def __init__(self, pairs, lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.0):
        super().__init__(pairs, lr, weight_decay)
        self.mu = float(momentum)
        self.nesterov = bool(nesterov)

    def update(self, i, p, g):
        active().sgd_update(p, g, self.bufs["momentum"][i], float(self.lr), self.mu, self.wd,
                            self.nesterov, self.t == 1)


class Adam(Optimizer):
    """Adam; `decoupled=True` gives AdamW (decay applied to weights, not folded into grads)."""
    slots = ("m", "v")

    def __init__(self, pairs, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled=False):
        super().__init__(pairs, lr, weight_decay)
        self.b1, self.b2, self.eps = float(betas[0]), float(betas[1]), float(eps)
        self.decoupled = bool(decoupled)

    def update(self, i, p, g):
        active().adam_update(p, g, self.bufs["m"][i], self.bufs["v"][i], float(self.lr),
                             self.b1, self.b2, self.eps, self.wd, self.t, self.decoupled)


OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
LR_SCHEDULES = ("cosine", "constant")


def scheduled_lr(lr, schedule, epoch, epochs):
    """Learning rate of `epoch` (0-based): cosine decays to 0 over the planned epochs, so a
    resumed run and an early-halted run follow the same curve."""
    if schedule == "constant":
        return lr
    return lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


def make_optimizer(name, pairs, lr, weight_decay=0.0, momentum=0.9):
    if name == "sgd":
        return SGD(pairs, lr, momentum, False, weight_decay)
    if name == "nesterov":
        return SGD(pairs, lr, momentum, True, weight_decay)
    if name in ("adam", "adamw"):
        return Adam(pairs, lr, weight_decay=weight_decay, decoupled=name == "adamw")
    raise EdgekdError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
