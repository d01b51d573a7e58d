"""The whole KD step as one compiled call, when the numba backend is active and every layer
has a fused form (dense, conv1d/conv2d, max/avg pooling, global average pooling, flatten;
not dropout or batchnorm) and the optimizer is SGD or Adam.

`fused_kd_step(model, opt)` returns a callable with kd_step's arguments and result, or None
(then kd_step runs layer by layer). The program handed to the kernel compiler is read from
each layer's plan, and parameter offsets from the model's flat vector.
"""

from math import prod

import numpy as np

from ..kernels.activations import CODES
from ..kernels.aligned import aligned_empty
from ..kernels.backend import active
from .losses import KDResult
from .optim import SGD, Adam


def _offset(view, flat):
    return (view.__array_interface__["data"][0] - flat.__array_interface__["data"][0]) // 4


_POOLS = {"maxpool1d": "maxpool", "maxpool2d": "maxpool", "avgpool1d": "avgpool"}


def program_of(model):
    """The model as kernel ops (edgekd.kernels.step_numba), or None if a layer has no fused
    form. Shapes, windows and activations come from each layer's plan (edgekd/nn/plan.py);
    parameter offsets from where its arrays sit in the model's flat vector."""
    ops = []
    for layer in model.layers:
        plan = layer.plan
        if plan.type == "dense":
            fan_in, units = plan.params["kernel"]
            ops.append(("dense", fan_in, units, CODES[plan.activation],
                        *_param_offsets(layer, model.flat_params)))
        elif plan.type in ("conv1d", "conv2d"):
            w = plan.window
            ops.append(("conv", *w.in_hwc, *w.size, *w.stride, w.out_hwc[2], *w.out_hwc[:2],
                        w.pads, CODES[plan.activation], *_param_offsets(layer, model.flat_params)))
        elif plan.type in _POOLS:
            w = plan.window
            ops.append((_POOLS[plan.type], *w.in_hwc, *w.size, *w.stride, *w.out_hwc[:2]))
        elif plan.type == "global_avgpool":
            ops.append(("gap", prod(plan.in_shape[:-1]), plan.in_shape[-1]))
        elif plan.type == "flatten":
            ops.append(("flatten",))
        else:
            return None
    return tuple(ops)


def _param_offsets(layer, flat):
    """(kernel offset, bias offset) of a weighted layer in the model's flat vector."""
    return _offset(layer.params["kernel"], flat), _offset(layer.params["bias"], flat)


def _c_array(a, dtype):
    """`a` as a C-contiguous array of `dtype`, copied only when it is not one already (the
    compiled step is specialised to that layout and type)."""
    if type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a, dtype)


class FusedKDStep:
    """kd_step for one (model, optimizer) pair: work arrays per batch size, one compiled call."""

    def __init__(self, model, opt, program):
        from ..kernels.step_numba import compile_step
        self.model, self.opt = model, opt
        self.kind = "sgd" if isinstance(opt, SGD) else "adam"
        self.features = int(np.prod(model.input_shape))
        self.fn, self.sizes = compile_step(program, self.kind, model.num_classes, self.features)
        (self.P, self.G), = opt.pairs
        slots = [opt.bufs[s][0] for s in opt.slots]
        self.S1 = slots[0]
        self.S2 = slots[1] if len(slots) > 1 else slots[0]
        self.work = {}

    def buffers(self, n):
        w = self.work.get(n)
        if w is None:
            nf, ni = self.sizes(n)
            c = self.model.num_classes
            w = self.work[n] = (aligned_empty(nf), aligned_empty(max(ni, 1), np.int64),
                                aligned_empty((n, c)), aligned_empty(n), aligned_empty(n, np.bool_))
        return w

    def __call__(self, x, soft, y, temperature, alpha):
        n = len(x)
        wf, wi, grad, kl, agree = self.buffers(n)
        x = _c_array(x, np.float32).reshape(n, self.features)  # the step copies x and soft
        t = _c_array(soft, np.float32)                         # onto cache lines itself
        y = _c_array(y, np.int64)
        o = self.opt
        o.t += 1
        if self.kind == "sgd":
            loss, correct = self.fn(x, t, y, self.P, self.G, self.S1, self.S2, wf, wi, grad, kl,
                                    agree, float(temperature), float(alpha), float(o.lr), o.mu,
                                    o.wd, o.nesterov, o.t == 1)
        else:
            loss, correct = self.fn(x, t, y, self.P, self.G, self.S1, self.S2, wf, wi, grad, kl,
                                    agree, float(temperature), float(alpha), float(o.lr), o.b1,
                                    o.b2, o.eps, o.wd, o.t, o.decoupled)
        return KDResult(float(loss), grad, kl, agree, int(correct))


def fused_kd_step(model, opt):
    """The cached fused step for (model, opt), or None when it does not apply."""
    if active().name != "numba" or type(opt) not in (SGD, Adam) or len(opt.pairs) != 1 \
            or opt.pairs[0][0] is not model.flat_params or opt.pairs[0][1] is not model.flat_grads:
        return None
    cache = model.__dict__.setdefault("_fused_steps", {})
    key = id(opt)
    if key not in cache:
        program = program_of(model)
        cache[key] = (opt, FusedKDStep(model, opt, program) if program is not None else None)
    return cache[key][1]
