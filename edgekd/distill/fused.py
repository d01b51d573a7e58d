"""The whole KD step as one compiled call, when the numba backend is active and every layer
has a fused form (dense, conv1d/conv2d, max/avg pooling, global average pooling, flatten;
not dropout or batchnorm) and the optimizer is SGD or Adam.

`fused_kd_step(model, opt)` returns a callable with kd_step's arguments and result, or None
(then kd_step runs layer by layer). The program handed to the kernel compiler is read from
each layer's plan, and parameter offsets from the model's flat vector.
"""

import numpy as np

from ..kernels.aligned import aligned_empty
from ..kernels.backend import active
from ..nn.program import CompiledForward, c_array, f32_vector, program_of
from .losses import KDResult
from .optim import SGD, Adam


class FusedKDStep:
    """kd_step for one (model, optimizer) pair: work arrays per batch size, one compiled call.
    Every argument goes in with exactly the type the compiled step was built for (an
    ahead-of-time build checks none: kernels/aot.py)."""

    def __init__(self, model, opt, program):
        from ..kernels.step_numba import compile_step
        self.model, self.opt = model, opt
        self.kind = "sgd" if isinstance(opt, SGD) else "adam"
        self.features = int(np.prod(model.input_shape))
        self.compiled = compile_step(program, self.kind, model.num_classes, self.features)
        self.fn, self.sizes = self.compiled.step, self.compiled.sizes
        model._compiled_forward = CompiledForward(model, self.compiled)  # predict uses it too
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
        x = c_array(x, np.float32).reshape(n, self.features)  # the step copies x and soft
        t = c_array(soft, np.float32)                         # onto cache lines itself
        y = c_array(y, np.int64)
        if t.shape != (n, self.model.num_classes) or y.shape != (n,):
            raise ValueError(f"a batch of {n} needs soft labels [{n}, {self.model.num_classes}] "
                             f"and labels [{n}], not {t.shape} and {y.shape}")
        o = self.opt
        o.t += 1
        if self.kind == "sgd":
            loss, correct = self.fn(x, t, y, self.P, self.G, self.S1, self.S2, wf, wi, grad, kl,
                                    agree, float(temperature), float(alpha), float(o.lr),
                                    float(o.mu), float(o.wd), bool(o.nesterov), o.t == 1)
        else:
            loss, correct = self.fn(x, t, y, self.P, self.G, self.S1, self.S2, wf, wi, grad, kl,
                                    agree, float(temperature), float(alpha), float(o.lr),
                                    float(o.b1), float(o.b2), float(o.eps), float(o.wd), int(o.t),
                                    bool(o.decoupled))
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
        ok = program is not None and all(f32_vector(opt.bufs[s][0]) for s in opt.slots) \
            and f32_vector(model.flat_params) and f32_vector(model.flat_grads)
        cache[key] = (opt, FusedKDStep(model, opt, program) if ok else None)
    return cache[key][1]
