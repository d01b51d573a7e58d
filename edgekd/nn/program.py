"""A model as a kernel program: the op tuples edgekd.kernels.step_numba compiles, read from
each layer's plan, and inference through the compiled program on the numba backend (one
call for the whole forward pass instead of one kernel call per layer; a program built ahead
of time needs no numba import at all: kernels/aot.py).
"""

from math import prod

import numpy as np

from ..kernels.activations import CODES
from ..kernels.aligned import aligned_empty
from ..kernels.backend import active


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


def c_array(a, dtype):
    """`a` as a C-contiguous array of `dtype`, copied only when it is not one already (the
    compiled step is specialised to that layout and type)."""
    if type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a, dtype)


def f32_vector(a):
    """Whether `a` is a C-contiguous float32 vector, as a compiled program takes."""
    return type(a) is np.ndarray and a.dtype == np.float32 and a.ndim == 1 and a.flags.c_contiguous


class CompiledForward:
    """model.predict through a compiled program's forward (logits of a chunk in one call),
    with the program's own KD kernel for the metrics computed from those logits. Arrays
    go in with exactly the types the program was built for (an ahead-of-time build checks
    none)."""

    def __init__(self, model, compiled):
        self.model, self.compiled, self.work = model, compiled, {}
        self.features = int(np.prod(model.input_shape))

    def predict(self, x, batch=256):
        x = c_array(x, np.float32).reshape(len(x), self.features)
        out = np.empty((len(x), self.model.num_classes), np.float32)
        P = self.model.flat_params
        for i in range(0, len(x), batch):
            n = min(batch, len(x) - i)
            if n not in self.work:
                nf, ni = self.compiled.forward_sizes(n)
                self.work[n] = (aligned_empty(nf), aligned_empty(max(ni, 1), np.int64))
            self.compiled.forward(x[i:i + n], P, *self.work[n], out[i:i + n])  # rows: C order
        return out


def compiled_forward(model):
    """The compiled inference of `model` on the numba backend: its fused training step's
    program when training built one, else a forward-only program; None on the numpy
    backend or when a layer has no compiled form (then predict runs layer by layer)."""
    if active().name != "numba":
        return None
    if "_compiled_forward" not in model.__dict__:
        program = program_of(model)
        if program is None or not f32_vector(model.flat_params):
            model._compiled_forward = None
        else:
            from ..kernels.step_numba import compile_step
            compiled = compile_step(program, None, model.num_classes, int(np.prod(model.input_shape)))
            model._compiled_forward = CompiledForward(model, compiled)
    return model._compiled_forward
