"""The layer contract and the registry that maps spec `type` names to layer classes.

A layer is made in two steps. First its plan, from its spec entry and its input shape
(without the batch axis): `build` validates the entry, derives the geometry and declares
params and buffers, and the plan methods (`flops`, `kept_elems`, `scratch_elems`,
`lowered_ops`, `sliding_window`) say what it costs, which TFLite ops it becomes and the
window the kernels slide over its input; nothing is allocated, so a spec is sized, costed and
lowered before it costs memory (`Layer.plan`, a LayerPlan). Then
`allocate`: `params` (trained), `grads` (same keys) and `buffers` (saved, not trained).
`forward` keeps what `backward` needs; `backward` fills `grads` and returns the gradient
of its input.

Kernels come from the active backend (numpy or numba). In training, outputs and gradients go
into work arrays kept per batch shape, so a step allocates nothing new; in inference every
call returns fresh arrays.
"""

from math import prod
from typing import ClassVar

import numpy as np

from ...errors import EdgekdError
from ...kernels.aligned import aligned_empty
from ...kernels.backend import active
from ..plan import LayerPlan

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
        self.plan = self.make_plan()

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

    # the contract: the plan ------------------------------------------------------------------
    def build(self):
        """Validate cfg, declare params/buffers (add_param, add_buffer), return the output
        shape. Nothing is allocated here, so a spec's size is known before it costs memory."""
        return self.in_shape

    def flops(self):
        """FLOPs of one sample's inference (conventions: edgekd/nn/plan.py)."""
        return 0

    def kept_elems(self):
        """Activation elements per sample training keeps: by default input and output."""
        return prod(self.in_shape) + prod(self.out_shape)

    def scratch_elems(self):
        """float32 scratch elements per sample beyond the activations (im2col columns)."""
        return 0

    def lowered_ops(self):
        """The TFLite ops (LoweredOp) it becomes at inference; () when it vanishes, None
        when it has no TFLite lowering."""
        return None

    def sliding_window(self):
        """Its Window (edgekd/nn/plan.py) when it slides one over its input, else None."""
        return None

    folds = False       # True: at inference it folds into the weighted op before it (`fold`)
    width_key = None    # the spec key of its width, which the designer scales
    structural = False  # shrinks or reshapes the tensor without weights (the designer keeps it)

    def make_plan(self):
        ops = self.lowered_ops()
        return LayerPlan(
            self.type, self.in_shape, self.out_shape,
            params={k: s for k, s in self.param_shapes.items() if k not in self.buffer_fills},
            buffers={k: (self.param_shapes[k], f) for k, f in self.buffer_fills.items()},
            flops=self.flops(), kept_elems=self.kept_elems(), scratch_elems=self.scratch_elems(),
            ops=None if ops is None else tuple(ops), folds=self.folds,
            activation=self.cfg.get("activation"), window=self.sliding_window())

    @classmethod
    def plan_of(cls, cfg, in_shape, where="layer"):
        """The plan of a layer of this type: pure, nothing allocated."""
        return cls(cfg, in_shape, where).plan

    # the contract: training ------------------------------------------------------------------

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
        """A work array reused across training steps of the same shape; fresh otherwise. On a
        cache line (kernels.aligned), so the compiled kernels sum in the same order whatever
        the heap looked like."""
        if not training:
            return aligned_empty(shape, dtype)
        key = (name, shape)
        a = self.work.get(key)
        if a is None:
            a = self.work[key] = aligned_empty(shape, dtype)
        return a

    def add_param(self, name, shape):
        self.param_shapes[name] = tuple(shape)

    def add_buffer(self, name, shape, fill):
        self.param_shapes[name] = tuple(shape)
        self.buffer_fills[name] = fill

    def num_weights(self):
        """Elements of every declared param and buffer."""
        return self.plan.param_elems + self.plan.buffer_elems

    def allocate(self):
        """Create the planned arrays: zeroed params and grads, filled buffers."""
        for name, shape in self.param_shapes.items():
            if name in self.plan.buffers:
                self.buffers[name] = np.full(shape, self.plan.buffers[name][1], np.float32)
            else:
                self.params[name] = np.zeros(shape, np.float32)
                self.grads[name] = np.zeros(shape, np.float32)

    def state(self):
        """Params and buffers by name, in canonical order."""
        both = {**self.params, **self.buffers}
        return [(k, both[k]) for k in self.param_order if k in both]
