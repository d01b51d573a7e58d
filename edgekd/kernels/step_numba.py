"""One numba-compiled function per training step: forward, KD loss, backward and optimizer
update of a whole model, with no Python between layers.

The model arrives as a *program*, a tuple of plain op tuples (built by edgekd.distill.fused
from the layers; this module knows nothing of them):

    ("dense", fan_in, units, act_code, kernel_offset, bias_offset)
    ("conv", h, w, c, kh, kw, sh, sw, filters, ho, wo, (pt, pb, pl, pr), act_code, k_off, b_off)
    ("maxpool" | "avgpool", h, w, c, ph, pw, sh, sw, ho, wo)
    ("gap", h * w, c)
    ("flatten",)

Offsets index the model's flat parameter (and gradient) vector. Python source specialised to
the program (every feature size a literal; the batch size stays a run-time value, since
halting makes batches of any size) is written once under the cache directory and compiled
by numba with its on-disk cache, so a later process loads it instead of compiling. The step
calls the same numba kernels as the layer-by-layer path, in the same order, on the same
values, so both give the same numbers.
"""

import hashlib
import importlib.util
import os
import sys

from . import numba_twins

VERSION = 1


def cache_dir():
    """Where generated steps live: $NUMBA_CACHE_DIR/edgekd-steps if set, else
    $XDG_CACHE_HOME/edgekd/steps (default ~/.cache/edgekd/steps)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.path.join(os.environ["NUMBA_CACHE_DIR"], "edgekd-steps")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgekd", "steps")


def _twins_digest():
    with open(numba_twins.__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


class _Gen:
    """Builds the step's source line by line; float and int workspaces grow as ops ask."""

    def __init__(self):
        self.lines, self.fsize, self.isize = [], [], []

    def emit(self, line, indent=1):
        self.lines.append("    " * indent + line)

    def fbuf(self, name, per_sample, shape):
        """A float32 work array of n * per_sample elements, viewed as (n, *shape)."""
        start = "+".join(self.fsize) or "0"
        self.fsize.append(f"n*{per_sample}")
        dims = ", ".join(["n", *map(str, shape)])
        self.emit(f"{name} = WF[{start}:{start}+n*{per_sample}].reshape(({dims}))")

    def ibuf(self, name, per_sample, shape):
        start = "+".join(self.isize) or "0"
        self.isize.append(f"n*{per_sample}")
        dims = ", ".join(["n", *map(str, shape)])
        self.emit(f"{name} = WI[{start}:{start}+n*{per_sample}].reshape(({dims}))")


def _size(shape):
    s = 1
    for d in shape:
        s *= d
    return s


def source(program, optimizer, classes, in_size):
    """Python source of `step(...)` for `program`, with `optimizer` 'sgd' or 'adam'."""
    g = _Gen()
    acts = ["x"]          # activation names, acts[i] feeds op i
    shapes = [(in_size,)]  # per-sample shape of acts[i] as the op reading it views it
    g.emit("n = x.shape[0]")
    views = []            # per op: names used again in backward
    for i, op in enumerate(program):
        kind = op[0]
        src = acts[-1]
        if kind == "dense":
            _, fi, units, code, wo, bo = op
            g.emit(f"w{i} = P[{wo}:{wo + fi * units}].reshape(({fi}, {units}))")
            g.emit(f"b{i} = P[{bo}:{bo + units}]")
            g.fbuf(f"a{i}", units, (units,))
            g.emit(f"dense_forward({src}.reshape((n, {fi})), w{i}, b{i}, {code}, a{i})")
            acts.append(f"a{i}")
            shapes.append((units,))
        elif kind == "conv":
            _, h, w, c, kh, kw, sh, sw, f, ho, wo_, pads, code, ko, bo = op
            pt, pb, pl, pr = pads
            hp, wp = h + pt + pb, w + pl + pr
            g.emit(f"k{i} = P[{ko}:{ko + kh * kw * c * f}].reshape(({kh}, {kw}, {c}, {f}))")
            g.emit(f"b{i} = P[{bo}:{bo + f}]")
            x4 = f"{src}.reshape((n, {h}, {w}, {c}))"
            if any(pads):
                g.fbuf(f"xp{i}", hp * wp * c, (hp, wp, c))
                g.emit(f"xp{i}[:] = 0")
                g.emit(f"xs{i} = {x4}")
                g.emit("for s in range(n):")
                g.emit(f"for r in range({h}):", 2)
                g.emit(f"xp{i}[s, {pt} + r, {pl}:{pl + w}, :] = xs{i}[s, r]", 3)
                x4 = f"xp{i}"
            else:
                g.emit(f"xp{i} = {x4}")
            g.fbuf(f"a{i}", ho * wo_ * f, (ho, wo_, f))
            g.emit(f"conv2d_forward(xp{i}, k{i}, b{i}, {sh}, {sw}, {code}, a{i})")
            acts.append(f"a{i}")
            shapes.append((ho, wo_, f))
        elif kind in ("maxpool", "avgpool"):
            _, h, w, c, ph, pw, sh, sw, ho, wo_ = op
            g.fbuf(f"a{i}", ho * wo_ * c, (ho, wo_, c))
            x4 = f"{src}.reshape((n, {h}, {w}, {c}))"
            if kind == "maxpool":
                g.ibuf(f"arg{i}", ho * wo_ * c, (ho, wo_, c))
                g.emit(f"maxpool2d_forward({x4}, {ph}, {pw}, {sh}, {sw}, a{i}, arg{i})")
            else:
                g.emit(f"avgpool2d_forward({x4}, {ph}, {pw}, {sh}, {sw}, a{i})")
            acts.append(f"a{i}")
            shapes.append((ho, wo_, c))
        elif kind == "gap":
            _, hw, c = op
            g.fbuf(f"a{i}", c, (c,))
            g.emit(f"xs{i} = {src}.reshape((n, {hw}, {c}))")
            g.emit("for s in range(n):")
            g.emit(f"for ci in range({c}):", 2)
            g.emit("acc = np.float32(0)", 3)
            g.emit(f"for p in range({hw}):", 3)
            g.emit(f"acc += xs{i}[s, p, ci]", 4)
            g.emit(f"a{i}[s, ci] = acc / np.float32({hw})", 3)
            acts.append(f"a{i}")
            shapes.append((c,))
        elif kind == "flatten":
            acts.append(src)
            shapes.append((_size(shapes[-1]),))
        else:
            raise ValueError(f"no fused form for {kind!r}")
        views.append(src)

    logits = acts[-1]
    g.emit(f"s_ = {logits}.reshape((n, {classes}))")
    g.emit("loss = kd_loss_grad(s_, t, y, temperature, alpha, grad, kl)")
    g.emit("correct = 0")
    g.emit("for s in range(n):")
    g.emit("bs = 0", 2)
    g.emit("bt = 0", 2)
    g.emit(f"for j in range(1, {classes}):", 2)
    g.emit("if s_[s, j] > s_[s, bs]:", 3)
    g.emit("bs = j", 4)
    g.emit("if t[s, j] > t[s, bt]:", 3)
    g.emit("bt = j", 4)
    g.emit("agree[s] = bs == bt", 2)
    g.emit("if bs == y[s]:", 2)
    g.emit("correct += 1", 3)

    # backward: gy is the gradient of the current op's output, copied into the op's own buffer
    # (the kernels overwrite it with the pre-activation gradient, as the layer path does)
    gy = "grad"
    for i in range(len(program) - 1, -1, -1):
        op = program[i]
        kind = op[0]
        first = i == 0 or all(p[0] == "flatten" for p in program[:i])
        src = views[i]
        if kind == "dense":
            _, fi, units, code, wo, bo = op
            g.fbuf(f"dz{i}", units, (units,))
            g.emit(f"dz{i}[:] = {gy}.reshape((n, {units}))")
            dx = "None"
            if not first:
                g.fbuf(f"dx{i}", fi, (fi,))
                dx = f"dx{i}"
            g.emit(f"gw{i} = G[{wo}:{wo + fi * units}].reshape(({fi}, {units}))")
            g.emit(f"gb{i} = G[{bo}:{bo + units}]")
            g.emit(f"dense_backward({src}.reshape((n, {fi})), w{i}, a{i}, dz{i}, {code}, gw{i}, gb{i}, {dx})")
            gy = dx
        elif kind == "conv":
            _, h, w, c, kh, kw, sh, sw, f, ho, wo_, pads, code, ko, bo = op
            pt, pb, pl, pr = pads
            hp, wp = h + pt + pb, w + pl + pr
            g.fbuf(f"dz{i}", ho * wo_ * f, (ho, wo_, f))
            g.emit(f"dz{i}[:] = {gy}.reshape((n, {ho}, {wo_}, {f}))")
            g.emit(f"gk{i} = G[{ko}:{ko + kh * kw * c * f}].reshape(({kh}, {kw}, {c}, {f}))")
            g.emit(f"gb{i} = G[{bo}:{bo + f}]")
            if first:
                g.emit(f"conv2d_backward(xp{i}, k{i}, a{i}, dz{i}, {sh}, {sw}, {code}, gk{i}, gb{i}, None)")
                gy = None
                continue
            g.fbuf(f"dxp{i}", hp * wp * c, (hp, wp, c))
            g.emit(f"conv2d_backward(xp{i}, k{i}, a{i}, dz{i}, {sh}, {sw}, {code}, gk{i}, gb{i}, dxp{i})")
            if any(pads):
                g.fbuf(f"dx{i}", h * w * c, (h, w, c))
                g.emit("for s in range(n):")
                g.emit(f"for r in range({h}):", 2)
                g.emit(f"dx{i}[s, r] = dxp{i}[s, {pt} + r, {pl}:{pl + w}, :]", 3)
                gy = f"dx{i}"
            else:
                gy = f"dxp{i}"
        elif kind in ("maxpool", "avgpool"):
            _, h, w, c, ph, pw, sh, sw, ho, wo_ = op
            g.fbuf(f"dx{i}", h * w * c, (h, w, c))
            dy = f"{gy}.reshape((n, {ho}, {wo_}, {c}))"
            if kind == "maxpool":
                g.emit(f"maxpool2d_backward(arg{i}, {ph}, {pw}, {sh}, {sw}, {dy}, dx{i})")
            else:
                g.emit(f"avgpool2d_backward({ph}, {pw}, {sh}, {sw}, {dy}, dx{i})")
            gy = f"dx{i}"
        elif kind == "gap":
            _, hw, c = op
            g.fbuf(f"dx{i}", hw * c, (hw, c))
            g.emit(f"gs{i} = {gy}.reshape((n, {c}))")
            g.emit("for s in range(n):")
            g.emit(f"for ci in range({c}):", 2)
            g.emit(f"v = gs{i}[s, ci] / np.float32({hw})", 3)
            g.emit(f"for p in range({hw}):", 3)
            g.emit(f"dx{i}[s, p, ci] = v", 4)
            gy = f"dx{i}"
        # flatten: the gradient passes through unchanged
        if first:
            break

    if optimizer == "sgd":
        g.emit("sgd_update(P, G, S1, lr, momentum, weight_decay, nesterov, first_step)")
        args = "lr, momentum, weight_decay, nesterov, first_step"
    else:
        g.emit("adam_update(P, G, S1, S2, lr, beta1, beta2, eps, weight_decay, step_no, decoupled)")
        args = "lr, beta1, beta2, eps, weight_decay, step_no, decoupled"
    g.emit("return loss, correct")
    head = [
        f"# generated by edgekd.kernels.step_numba v{VERSION} for numba_twins {_twins_digest()}",
        f"# program: {program!r}, optimizer: {optimizer}",
        "import numpy as np",
        "from numba import njit",
        "from edgekd.kernels.numba_twins import (dense_forward, dense_backward, conv2d_forward,",
        "    conv2d_backward, maxpool2d_forward, maxpool2d_backward, avgpool2d_forward,",
        "    avgpool2d_backward, kd_loss_grad, sgd_update, adam_update)",
        "",
        "",
        "@njit(cache=True, nogil=True)",
        f"def step(x, t, y, P, G, S1, S2, WF, WI, grad, kl, agree, temperature, alpha, {args}):",
    ]
    sizes = ("\n\ndef sizes(n):\n"
             f"    return {'+'.join(g.fsize) or '0'}, {'+'.join(g.isize) or '0'}\n")
    return "\n".join(head + g.lines) + "\n" + sizes


_loaded = {}


def compile_step(program, optimizer, classes, in_size):
    """(step, sizes): the compiled step for `program` and sizes(n) -> (float, int) workspace
    elements for a batch of n. Loaded from the cache directory when already generated."""
    src = source(program, optimizer, classes, in_size)
    digest = hashlib.sha256(src.encode()).hexdigest()[:20]
    if digest in _loaded:
        return _loaded[digest]
    root = cache_dir()
    path = os.path.join(root, f"edgekd_step_{digest}.py")
    if not os.path.exists(path):
        os.makedirs(root, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(src)
        os.replace(tmp, path)  # never rewritten afterwards: numba's cache keys on its mtime
    name = f"edgekd_step_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    _loaded[digest] = (mod.step, mod.sizes)
    return _loaded[digest]
