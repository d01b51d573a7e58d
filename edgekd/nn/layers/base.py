"""The layer contract and the registry that maps spec `type` names to layer classes.

A layer is built from its spec entry and its input shape (without the batch axis). It owns
`params` (trained), `grads` (same keys) and `buffers` (saved, not trained). `forward` keeps
what `backward` needs; `backward` fills `grads` and returns the gradient of its input.

Kernels come from the active backend (numpy or numba). In training, outputs and gradients go
into work arrays kept per batch shape, so a step allocates nothing new; in inference every
call returns fresh arrays.
"""

from typing import ClassVar

import numpy as np

from ...errors import EdgekdError
from ...kernels.backend import active

REGISTRY = {}


def register(cls):
    REGISTRY[cls.type] = cls
    return cls


class Layer:
    type = ""
    param_order = ()   # canonical order of params and buffers, used for hashing and export
    options: ClassVar[dict] = {}       # spec key -> default; keys not listed here are rejected

    def __init__(self, cfg, in_shape, where):
        self.where = where
        unknown = set(cfg) - set(self.options) - {"type"}
        if unknown:
            self.fail(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(self.options)}")
        self.cfg = {k: cfg.get(k, d) for k, d in self.options.items()}
        self.in_shape = tuple(in_shape)
        self.params, self.grads, self.buffers = {}, {}, {}
        self.param_shapes, self.buffer_fills = {}, {}   # declared by build, allocated later
        self.work = {}
        self.need_dx = True   # the model turns this off for its first layer
        self.out_shape = tuple(self.build())

    def fail(self, msg):
        raise EdgekdError(f"{self.where} ({self.type}): {msg}")

    # helpers for validating spec fields --------------------------------------------------
    def positive_int(self, key):
        v = self.cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            self.fail(f"{key} must be a positive integer, got {v!r}")
        return v

    def int_pair(self, key, fallback=None):
        v = self.cfg[key] if self.cfg[key] is not None else fallback
        pair = [v, v] if isinstance(v, int) and not isinstance(v, bool) else v
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in pair)):
            self.fail(f"{key} must be a positive integer or a pair of them, got {v!r}")
        return tuple(pair)

    def choice(self, key, allowed):
        if self.cfg[key] not in allowed:
            self.fail(f"{key} must be one of {list(allowed)}, got {self.cfg[key]!r}")
        return self.cfg[key]

    def need_rank(self, rank, hint):
        if len(self.in_shape) != rank:
            self.fail(f"needs an input of rank {rank} {hint}, got shape {list(self.in_shape)}")

    # the contract ---------------------------------------------------------------------------
    def build(self):
        """Validate cfg, declare params/buffers (add_param, add_buffer), return the output
        shape. Nothing is allocated here, so a spec's size is known before it costs memory."""
        return self.in_shape

    def init(self, rng):
        """Draw initial parameters from a seeded numpy Generator."""

    def forward(self, x, training):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    @property
    def K(self):
        return active()

    def scratch(self, name, shape, training, dtype=np.float32):
        """A work array reused across training steps of the same shape; fresh otherwise."""
        if not training:
            return np.empty(shape, dtype)
        key = (name, shape)
        a = self.work.get(key)
        if a is None:
            a = self.work[key] = np.empty(shape, dtype)
        return a

    def add_param(self, name, shape):
        self.param_shapes[name] = tuple(shape)

    def add_buffer(self, name, shape, fill):
        self.param_shapes[name] = tuple(shape)
        self.buffer_fills[name] = fill

    def num_weights(self):
        """Elements of every declared param and buffer."""
        return sum(int(np.prod(s, dtype=np.int64)) for s in self.param_shapes.values())

    def allocate(self):
        """Create the declared arrays: zeroed params and grads, filled buffers."""
        for name, shape in self.param_shapes.items():
            if name in self.buffer_fills:
                self.buffers[name] = np.full(shape, self.buffer_fills[name], np.float32)
            else:
                self.params[name] = np.zeros(shape, np.float32)
                self.grads[name] = np.zeros(shape, np.float32)

    def state(self):
        """Params and buffers by name, in canonical order."""
        both = {**self.params, **self.buffers}
        return [(k, both[k]) for k in self.param_order if k in both]
