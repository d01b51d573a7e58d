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
halting makes batches of any size) is written once under the cache directory: the training
step and an inference forward pass (a teacher's program has the forward alone). It is built
ahead of time into an extension module where this machine can (kernels/aot.py: a later
process then needs no numba), else compiled by numba with its on-disk cache.

Dense layers and convolutions of at least GEMM_MIN_K taps x channels call BLAS sgemm through
numba's numpy.dot (SciPy's bindings) when SciPy is installed; the rest are loops written out
per op (numba_twins' kernels where a generated form is missing). Sums run in other orders than
numpy's, so the step agrees with the numpy backend to float32 round-off, not bit for bit
(tests/test_fused_step.py). The direct-loop convolutions keep their sums in scalars, which
LLVM leaves unvectorised here; the sgemm path is the fast one.
"""

import hashlib
import importlib.util
import os
import sys

from . import aot

VERSION = 5


def cache_dir():
    """Where generated steps live: $NUMBA_CACHE_DIR/edgekd-steps if set, else
    $XDG_CACHE_HOME/edgekd/steps (default ~/.cache/edgekd/steps)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.path.join(os.environ["NUMBA_CACHE_DIR"], "edgekd-steps")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgekd", "steps")


def _twins_digest():
    with open(os.path.join(os.path.dirname(__file__), "numba_twins.py"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


class _Gen:
    """Builds the step's source line by line; float and int workspaces grow as ops ask."""

    def __init__(self):
        self.lines, self.fsize, self.isize = [], [], []

    def emit(self, line, indent=1):
        self.lines.append("    " * indent + line)

    def _fslice(self, name, size, dims):
        """`name` = the next `size` floats of WF, viewed with shape `dims` (source text)."""
        start = "+".join(self.fsize) or "0"
        self.fsize.append(size)
        self.emit(f"{name} = WF[{start}:{start}+{size}].reshape(({dims}))")

    def fbuf(self, name, per_sample, shape):
        """A float32 work array of n * per_sample elements, viewed as (n, *shape)."""
        self._fslice(name, f"n*{per_sample}", ", ".join(["n", *map(str, shape)]))

    def fconst(self, name, size, shape):
        """A float32 work array of a fixed `size` (independent of the batch)."""
        self._fslice(name, str(size), ", ".join(map(str, shape)))

    def fchunk(self, name, ch, rows, cols):
        """A float32 [min(n, ch) * rows, cols] array: one chunk of `ch` samples' im2col rows
        (no more than the batch needs)."""
        self._fslice(name, f"min(n, {ch})*{rows * cols}", f"min(n, {ch})*{rows}, {cols}")

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


MAX_UNROLL = 32  # filters (and channels) up to this many get written-out convolution loops


def _accs(f, prefix="c"):
    return [f"{prefix}{q}" for q in range(f)]


def _pixel_loops(g, ho, wo, at=1, samples="n"):
    """Open the loops over every output pixel of the batch (sample, row, column), the
    outermost at indent `at`: the body goes at `at + 3`. Every direct-loop pass of a
    convolution walks the pixels this way."""
    g.emit(f"for s in range({samples}):", at)
    g.emit(f"for oh in range({ho}):", at + 1)
    g.emit(f"for ow in range({wo}):", at + 2)


def _conv_forward(g, i, kh, kw, c, f, sh, sw, ho, wo, code):
    """Direct convolution, no im2col: per output pixel the `f` filter sums live in scalars
    (registers), bias first, then (kernel row, kernel column, input channel) in order."""
    acc = _accs(f)
    _pixel_loops(g, ho, wo)
    g.emit("; ".join(f"{a} = b{i}[{q}]" for q, a in enumerate(acc)), 4)
    g.emit(f"for ki in range({kh}):", 4)
    g.emit(f"for kj in range({kw}):", 5)
    g.emit(f"xr = xp{i}[s, oh * {sh} + ki, ow * {sw} + kj]", 6)
    g.emit(f"wr = k{i}[ki, kj]", 6)
    g.emit(f"for ci in range({c}):", 6)
    g.emit("xv = xr[ci]", 7)
    g.emit("wc = wr[ci]", 7)
    for q, a in enumerate(acc):
        g.emit(f"{a} += xv * wc[{q}]", 7)
    g.emit(f"o = a{i}[s, oh, ow]", 4)
    for q, a in enumerate(acc):
        g.emit(f"o[{q}] = _act({a}, {code})", 4)


def _conv_backward(g, i, kh, kw, c, f, sh, sw, ho, wo, code, need_dx):
    """dz <- dz * act'(y); bias and kernel gradients as sums over every output pixel of the
    batch with the `f` filter sums in scalars; the input gradient pixel by pixel, only when
    a layer before this one needs it."""
    if code:
        _conv_act_grad(g, i, f, ho, wo, code)
    _conv_bias_grad(g, i, f, ho, wo)
    _conv_kernel_grad(g, i, kh, kw, c, f, sh, sw, ho, wo)
    if need_dx:
        _conv_input_grad(g, i, kh, kw, c, f, sh, sw, ho, wo)


def _conv_act_grad(g, i, f, ho, wo, code):
    """dz <- dz * act'(y) in place, y read from the layer's output: what the gradient passes
    below see is the pre-activation gradient."""
    _pixel_loops(g, ho, wo)
    g.emit(f"gr = dz{i}[s, oh, ow]", 4)
    g.emit(f"yr = a{i}[s, oh, ow]", 4)
    g.emit(f"for q in range({f}):", 4)
    g.emit(f"gr[q] *= _act_grad(yr[q], {code})", 5)


def _conv_bias_grad(g, i, f, ho, wo):
    """The bias gradient: per filter, the sum of dz over every output pixel of the batch,
    the `f` sums in scalars through one pass."""
    acc = _accs(f)
    g.emit("; ".join(f"{a} = np.float32(0)" for a in acc))
    _pixel_loops(g, ho, wo)
    g.emit(f"gr = dz{i}[s, oh, ow]", 4)
    for q, a in enumerate(acc):
        g.emit(f"{a} += gr[{q}]", 4)
    for q, a in enumerate(acc):
        g.emit(f"gb{i}[{q}] = {a}")


def _conv_kernel_grad(g, i, kh, kw, c, f, sh, sw, ho, wo):
    """The kernel gradient, one kernel tap and input channel at a time: its `f` filter sums
    of x * dz over every output pixel of the batch in scalars, stored once at the end."""
    acc = _accs(f)
    g.emit(f"for ki in range({kh}):")
    g.emit(f"for kj in range({kw}):", 2)
    g.emit(f"for ci in range({c}):", 3)
    g.emit("; ".join(f"{a} = np.float32(0)" for a in acc), 4)
    _pixel_loops(g, ho, wo, at=4)
    g.emit(f"xv = xp{i}[s, oh * {sh} + ki, ow * {sw} + kj, ci]", 7)
    g.emit(f"gr = dz{i}[s, oh, ow]", 7)
    for q, a in enumerate(acc):
        g.emit(f"{a} += xv * gr[{q}]", 7)
    g.emit(f"gc = gk{i}[ki, kj, ci]", 4)
    for q, a in enumerate(acc):
        g.emit(f"gc[{q}] = {a}", 4)


def _conv_input_grad(g, i, kh, kw, c, f, sh, sw, ho, wo):
    """The input gradient vectorised over input channels: the kernel transposed to
    [kh, kw, f, c] once per step, then per output pixel and kernel tap c sums in scalars,
    added into the padded input's gradient."""
    g.fconst(f"kt{i}", kh * kw * f * c, (kh, kw, f, c))
    g.emit(f"for ki in range({kh}):")
    g.emit(f"for kj in range({kw}):", 2)
    g.emit(f"for ci in range({c}):", 3)
    g.emit(f"for q in range({f}):", 4)
    g.emit(f"kt{i}[ki, kj, q, ci] = k{i}[ki, kj, ci, q]", 5)
    ds = _accs(c, "d")
    g.emit(f"dxp{i}[:] = 0")
    _pixel_loops(g, ho, wo)
    g.emit(f"gr = dz{i}[s, oh, ow]", 4)
    g.emit(f"for ki in range({kh}):", 4)
    g.emit(f"for kj in range({kw}):", 5)
    g.emit(f"dr = dxp{i}[s, oh * {sh} + ki, ow * {sw} + kj]", 6)
    g.emit("; ".join(f"{a} = dr[{q}]" for q, a in enumerate(ds)), 6)
    g.emit(f"for q in range({f}):", 6)
    g.emit("gv = gr[q]", 7)
    g.emit(f"wt = kt{i}[ki, kj, q]", 7)
    for q, a in enumerate(ds):
        g.emit(f"{a} += gv * wt[{q}]", 7)
    g.emit("; ".join(f"dr[{q}] = {a}" for q, a in enumerate(ds)), 6)


GEMM_MIN_K = 8  # with BLAS, convolutions of at least this many taps x channels use im2col + sgemm
CHUNK_FLOATS = 32768  # im2col rows of a few samples at a time, 128 KiB: they stay in L2


def _chunk(P, K):
    """Samples per im2col chunk: as many as CHUNK_FLOATS holds, at least one."""
    return max(1, CHUNK_FLOATS // (P * K))


def _patch_rows(g, rows, image, pix, body, kh, kw, c, sh, sw, ho, wo, at=2):
    """The loop nest pairing each output pixel's im2col row (`rows`, [chunk*ho*wo, kh*kw*c])
    with its input patch in `image`, for the m samples of the chunk starting at s0 (opened by
    `_chunks`): `body` copies a patch into its row (forward) or adds a row back into its
    patch (backward), with `pix` the patch pixel and `row` the row."""
    _pixel_loops(g, ho, wo, at=at, samples="m")
    g.emit(f"row = {rows}[s * {ho * wo} + oh * {wo} + ow]", at + 3)
    g.emit(f"for ki in range({kh}):", at + 3)
    g.emit(f"for kj in range({kw}):", at + 4)
    g.emit(f"{pix} = {image}[s0 + s, oh * {sh} + ki, ow * {sw} + kj]", at + 5)
    g.emit(f"base = (ki * {kw} + kj) * {c}", at + 5)
    g.emit(f"for ci in range({c}):", at + 5)
    g.emit(body, at + 6)


def _chunks(g, ch, backward=False):
    """Open the loop over the batch in chunks of `ch` samples: s0 the first, m how many.
    Backward walks them last first, since forward left the last chunk's rows in place."""
    if backward:
        g.emit(f"last = (n - 1) // {ch} * {ch}")
        g.emit(f"for s0 in range(last, -1, -{ch}):")
    else:
        g.emit(f"for s0 in range(0, n, {ch}):")
    g.emit(f"m = min({ch}, n - s0)", 2)


def _conv_forward_gemm(g, i, kh, kw, c, f, sh, sw, ho, wo, code):
    """Wide kernels, a chunk of samples at a time: the patches copied into im2col rows, one
    sgemm, then bias and activation in one pass over the chunk's outputs. Only the last
    chunk's rows are kept: backward builds the others again rather than hold a batch of them."""
    K, P = kh * kw * c, ho * wo
    ch = _chunk(P, K)
    g.fchunk(f"cm{i}", ch, P, K)
    g.emit(f"am{i} = a{i}.reshape((n * {P}, {f}))")
    g.emit(f"km{i} = k{i}.reshape(({K}, {f}))")
    _chunks(g, ch)
    _patch_rows(g, f"cm{i}", f"xp{i}", "xr", "row[base + ci] = xr[ci]", kh, kw, c, sh, sw, ho, wo)
    g.emit(f"np.dot(cm{i}[:m * {P}], km{i}, am{i}[s0 * {P}:(s0 + m) * {P}])", 2)
    g.emit(f"for r in range(s0 * {P}, (s0 + m) * {P}):", 2)
    g.emit(f"for q in range({f}):", 3)
    g.emit(f"am{i}[r, q] = _act(am{i}[r, q] + b{i}[q], {code})", 4)


def _conv_backward_gemm(g, i, kh, kw, c, f, sh, sw, ho, wo, code, need_dx):
    """The activation and bias gradients in one pass over the batch, then per chunk, last
    first: its im2col rows (rebuilt, but for the last chunk, which forward left in place), the
    kernel gradient's share (one sgemm, summed over chunks) and, when a layer below needs it,
    the rows' gradient (one sgemm) added back into the input's."""
    K, P = kh * kw * c, ho * wo
    ch = _chunk(P, K)
    g.emit(f"dm{i} = dz{i}.reshape((n * {P}, {f}))")
    # one pass, row by row: the activation's gradient applied, the bias gradient summed
    g.emit(f"gb{i}[:] = 0")
    g.emit(f"for r in range(n * {P}):")
    g.emit(f"for q in range({f}):", 2)
    g.emit(f"v = dm{i}[r, q] * _act_grad(am{i}[r, q], {code})" if code else f"v = dm{i}[r, q]", 3)
    if code:
        g.emit(f"dm{i}[r, q] = v", 3)
    g.emit(f"gb{i}[q] += v", 3)
    g.emit(f"gkm{i} = gk{i}.reshape(({K}, {f}))")
    g.emit(f"gkm{i}[:] = 0")   # the chunks' shares are added in (0 + x is exact)
    g.fconst(f"gkc{i}", K * f, (K, f))
    if need_dx:
        g.fchunk(f"dc{i}", ch, P, K)
        g.emit(f"dxp{i}[:] = 0")
    _chunks(g, ch, backward=True)
    g.emit("if s0 != last:", 2)
    _patch_rows(g, f"cm{i}", f"xp{i}", "xr", "row[base + ci] = xr[ci]", kh, kw, c, sh, sw, ho, wo,
                at=3)
    g.emit(f"dmc = dm{i}[s0 * {P}:(s0 + m) * {P}]", 2)
    g.emit(f"np.dot(cm{i}[:m * {P}].T, dmc, gkc{i})", 2)
    g.emit(f"for r in range({K}):", 2)
    g.emit(f"for q in range({f}):", 3)
    g.emit(f"gkm{i}[r, q] += gkc{i}[r, q]", 4)
    if not need_dx:
        return
    g.emit(f"np.dot(dmc, km{i}.T, dc{i}[:m * {P}])", 2)
    _patch_rows(g, f"dc{i}", f"dxp{i}", "dr", "dr[ci] += row[base + ci]", kh, kw, c, sh, sw, ho, wo)


def _dense_forward(g, i, op, src, shape, blas):
    _, fi, units, code, wo, bo = op
    g.emit(f"w{i} = P[{wo}:{wo + fi * units}].reshape(({fi}, {units}))")
    g.emit(f"b{i} = P[{bo}:{bo + units}]")
    g.fbuf(f"a{i}", units, (units,))
    if blas:
        g.emit(f"np.dot({src}.reshape((n, {fi})), w{i}, a{i})")
        g.emit("for s in range(n):")
        g.emit(f"for j in range({units}):", 2)
        g.emit(f"a{i}[s, j] = _act(a{i}[s, j] + b{i}[j], {code})", 3)
    else:
        g.emit(f"dense_forward({src}.reshape((n, {fi})), w{i}, b{i}, {code}, a{i})")
    return f"a{i}", (units,)


def _dense_backward(g, i, op, src, gy, first, blas):
    _, fi, units, code, wo, bo = op
    g.fbuf(f"dz{i}", units, (units,))
    g.emit(f"dz{i}[:] = {gy}.reshape((n, {units}))")
    dx = "None"
    if not first:
        g.fbuf(f"dx{i}", fi, (fi,))
        dx = f"dx{i}"
    g.emit(f"gw{i} = G[{wo}:{wo + fi * units}].reshape(({fi}, {units}))")
    g.emit(f"gb{i} = G[{bo}:{bo + units}]")
    if blas:
        if code:
            g.emit("for s in range(n):")
            g.emit(f"for j in range({units}):", 2)
            g.emit(f"dz{i}[s, j] *= _act_grad(a{i}[s, j], {code})", 3)
        g.emit(f"np.dot({src}.reshape((n, {fi})).T, dz{i}, gw{i})")
        g.emit(f"for j in range({units}):")
        g.emit("acc = np.float32(0)", 2)
        g.emit("for s in range(n):", 2)
        g.emit(f"acc += dz{i}[s, j]", 3)
        g.emit(f"gb{i}[j] = acc", 2)
        if dx != "None":
            g.emit(f"np.dot(dz{i}, w{i}.T, {dx})")
    else:
        g.emit(f"dense_backward({src}.reshape((n, {fi})), w{i}, a{i}, dz{i}, {code}, gw{i}, gb{i}, {dx})")
    return dx


def _conv_forward_op(g, i, op, src, shape, blas):
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
    if blas and kh * kw * c >= GEMM_MIN_K:
        _conv_forward_gemm(g, i, kh, kw, c, f, sh, sw, ho, wo_, code)
    elif f <= MAX_UNROLL:
        _conv_forward(g, i, kh, kw, c, f, sh, sw, ho, wo_, code)
    else:
        g.emit(f"conv2d_forward(xp{i}, k{i}, b{i}, {sh}, {sw}, {code}, a{i})")
    return f"a{i}", (ho, wo_, f)


def _conv_backward_op(g, i, op, src, gy, first, blas):
    _, h, w, c, kh, kw, sh, sw, f, ho, wo_, pads, code, ko, bo = op
    pt, pb, pl, pr = pads
    hp, wp = h + pt + pb, w + pl + pr
    g.fbuf(f"dz{i}", ho * wo_ * f, (ho, wo_, f))
    g.emit(f"dz{i}[:] = {gy}.reshape((n, {ho}, {wo_}, {f}))")
    g.emit(f"gk{i} = G[{ko}:{ko + kh * kw * c * f}].reshape(({kh}, {kw}, {c}, {f}))")
    g.emit(f"gb{i} = G[{bo}:{bo + f}]")
    if not first:
        g.fbuf(f"dxp{i}", hp * wp * c, (hp, wp, c))
    if blas and kh * kw * c >= GEMM_MIN_K:
        _conv_backward_gemm(g, i, kh, kw, c, f, sh, sw, ho, wo_, code, not first)
    elif f <= MAX_UNROLL and c <= MAX_UNROLL:
        _conv_backward(g, i, kh, kw, c, f, sh, sw, ho, wo_, code, not first)
    else:
        g.emit(f"conv2d_backward(xp{i}, k{i}, a{i}, dz{i}, {sh}, {sw}, {code}, gk{i}, gb{i}, "
               f"{'None' if first else f'dxp{i}'})")
    if first:
        return None
    if any(pads):
        g.fbuf(f"dx{i}", h * w * c, (h, w, c))
        g.emit("for s in range(n):")
        g.emit(f"for r in range({h}):", 2)
        g.emit(f"dx{i}[s, r] = dxp{i}[s, {pt} + r, {pl}:{pl + w}, :]", 3)
        return f"dx{i}"
    return f"dxp{i}"


def _pool_forward(g, i, op, src, shape, blas):
    kind, h, w, c, ph, pw, sh, sw, ho, wo_ = op
    g.fbuf(f"a{i}", ho * wo_ * c, (ho, wo_, c))
    x4 = f"{src}.reshape((n, {h}, {w}, {c}))"
    if kind == "maxpool":
        g.ibuf(f"arg{i}", ho * wo_ * c, (ho, wo_, c))
        g.emit(f"maxpool2d_forward({x4}, {ph}, {pw}, {sh}, {sw}, a{i}, arg{i})")
    else:
        g.emit(f"avgpool2d_forward({x4}, {ph}, {pw}, {sh}, {sw}, a{i})")
    return f"a{i}", (ho, wo_, c)


def _pool_backward(g, i, op, src, gy, first, blas):
    kind, h, w, c, ph, pw, sh, sw, ho, wo_ = op
    g.fbuf(f"dx{i}", h * w * c, (h, w, c))
    dy = f"{gy}.reshape((n, {ho}, {wo_}, {c}))"
    if kind == "maxpool":
        g.emit(f"maxpool2d_backward(arg{i}, {ph}, {pw}, {sh}, {sw}, {dy}, dx{i})")
    else:
        g.emit(f"avgpool2d_backward({ph}, {pw}, {sh}, {sw}, {dy}, dx{i})")
    return f"dx{i}"


def _gap_forward(g, i, op, src, shape, blas):
    _, hw, c = op
    g.fbuf(f"a{i}", c, (c,))
    g.emit(f"xs{i} = {src}.reshape((n, {hw}, {c}))")
    g.emit("for s in range(n):")
    g.emit(f"for ci in range({c}):", 2)
    g.emit("acc = np.float32(0)", 3)
    g.emit(f"for p in range({hw}):", 3)
    g.emit(f"acc += xs{i}[s, p, ci]", 4)
    g.emit(f"a{i}[s, ci] = acc / np.float32({hw})", 3)
    return f"a{i}", (c,)


def _gap_backward(g, i, op, src, gy, first, blas):
    _, hw, c = op
    g.fbuf(f"dx{i}", hw * c, (hw, c))
    g.emit(f"gs{i} = {gy}.reshape((n, {c}))")
    g.emit("for s in range(n):")
    g.emit(f"for ci in range({c}):", 2)
    g.emit(f"v = gs{i}[s, ci] / np.float32({hw})", 3)
    g.emit(f"for p in range({hw}):", 3)
    g.emit(f"dx{i}[s, p, ci] = v", 4)
    return f"dx{i}"


def _flatten_forward(g, i, op, src, shape, blas):
    return src, (_size(shape),)


def _flatten_backward(g, i, op, src, gy, first, blas):
    return gy   # the gradient passes through unchanged


# per op kind: (emit forward -> (output name, per-sample shape), emit backward -> gradient name)
_OPS = {"dense": (_dense_forward, _dense_backward), "conv": (_conv_forward_op, _conv_backward_op),
        "maxpool": (_pool_forward, _pool_backward), "avgpool": (_pool_forward, _pool_backward),
        "gap": (_gap_forward, _gap_backward), "flatten": (_flatten_forward, _flatten_backward)}


def _emit_forward(g, program, in_size, blas):
    """Forward through every op; returns the logits' name and each op's input name."""
    acts = ["x"]          # activation names, acts[i] feeds op i
    shapes = [(in_size,)]  # per-sample shape of acts[i] as the op reading it views it
    for i, op in enumerate(program):
        if op[0] not in _OPS:
            raise ValueError(f"no fused form for {op[0]!r}")
        name, shape = _OPS[op[0]][0](g, i, op, acts[-1], shapes[-1], blas)
        acts.append(name)
        shapes.append(shape)
    return acts[-1], acts[:-1]


def _emit_loss(g, logits, classes):
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


def _emit_backward(g, program, views, blas):
    """Backward from the loss gradient: gy names the gradient of the current op's output,
    copied into the op's own buffer (the kernels overwrite it with the pre-activation
    gradient, as the layer path does); ops before the first weighted one are skipped."""
    gy = "grad"
    for i in range(len(program) - 1, -1, -1):
        first = i == 0 or all(p[0] == "flatten" for p in program[:i])
        gy = _OPS[program[i][0]][1](g, i, program[i], views[i], gy, first, blas)
        if first:
            break


def _emit_update(g, optimizer):
    """The optimizer step; returns the step function's optimizer arguments."""
    if optimizer == "sgd":
        g.emit("sgd_update(P, G, S1, lr, momentum, weight_decay, nesterov, first_step)")
        return "lr, momentum, weight_decay, nesterov, first_step"
    g.emit("adam_update(P, G, S1, S2, lr, beta1, beta2, eps, weight_decay, step_no, decoupled)")
    return "lr, beta1, beta2, eps, weight_decay, step_no, decoupled"


def _batch_room(g, in_size, classes):
    """Lines that place x [n, in_size] and t [n, classes] on cache lines after every other
    float work array, and the expression for the float workspace's whole size."""
    rest = "+".join(g.fsize) or "0"
    return [f"xo = -(-({rest}) // 16) * 16",
            f"to = -(-(xo + n*{in_size}) // 16) * 16"], f"to + n*{classes}"


def _batch_copies(g, in_size, classes):
    """The step's opening lines: the batch (x_in, t_in: wherever the caller's buffers sit)
    copied into the workspace, so the sums that read it run in one order whatever the heap
    looked like (a copy here is cheaper than one in Python)."""
    room, _ = _batch_room(g, in_size, classes)
    lines = ["n = x_in.shape[0]", *room,
             f"x = WF[xo:xo+n*{in_size}].reshape((n, {in_size}))", "x[:] = x_in",
             f"t = WF[to:to+n*{classes}].reshape((n, {classes}))", "t[:] = t_in"]
    return ["    " + line for line in lines]


def _sizes_source(name, g, in_size, classes):
    """`name(n)` -> (float, int) workspace elements for a batch of n."""
    room, total = _batch_room(g, in_size, classes)
    return f"\n\ndef {name}(n):\n" + "".join(f"    {line}\n" for line in room) + \
        f"    return {total}, {'+'.join(g.isize) or '0'}\n"


# Argument types of each function a program exports (f2/f1: float32 [.., ..] / [..], i1: int64
# [..], b1: bool [..], all C-contiguous; f: float64, i: int64, b: bool). An ahead-of-time
# build (kernels/aot.py) is compiled for exactly these, and its callers pass exactly these.
_STEP_ARGS = "f2 f2 i1 f1 f1 f1 f1 f1 i1 f2 f1 b1 f f"
_OPT_ARGS = {"sgd": "f f f b b", "adam": "f f f f f i b"}
_FORWARD_ARGS = "f2 f1 f1 i1 f2"
_KD_ARGS = "f2 f2 i1 f f f2 f1"

_JIT = "@njit(cache=True, nogil=True, fastmath={'reassoc', 'contract'})"


def _forward_source(program, classes, in_size, blas):
    """`forward(x_in, P, WF, WI, out)`: the logits of a batch in inference mode, written to
    out [n, classes]; its workspace is `forward_sizes(n)`."""
    g = _Gen()
    logits, _ = _emit_forward(g, program, in_size, blas)
    g.emit(f"out[:] = {logits}.reshape((n, {classes}))")
    room, _ = _batch_room(g, in_size, classes)
    head = ["n = x_in.shape[0]", *room,
            f"x = WF[xo:xo+n*{in_size}].reshape((n, {in_size}))", "x[:] = x_in"]
    body = ["    " + line for line in head] + g.lines
    return ["", "", _JIT, "def forward(x_in, P, WF, WI, out):", *body], \
        _sizes_source("forward_sizes", g, in_size, classes)


def _exports(step_args, optimizer):
    """The wrappers an ahead-of-time build compiles (each calls its @njit twin, so that
    twin's fastmath flags hold) and the EXPORTS table of their argument types."""
    kd = "s, t, y, temperature, alpha, grad, kl"
    exports = {"forward": _FORWARD_ARGS, "forward_sizes": "i"}
    lines = ["", "", "def aot_forward(x_in, P, WF, WI, out):", "    forward(x_in, P, WF, WI, out)"]
    if optimizer is not None:  # a trained model's metrics need the KD kernel; a teacher does not
        exports.update(step=f"{_STEP_ARGS} {_OPT_ARGS[optimizer]}", sizes="i", kd_loss_grad=_KD_ARGS)
        lines += ["", "", f"def aot_step({step_args}):", f"    return step({step_args})",
                  "", "", f"def aot_kd_loss_grad({kd}):", f"    return kd_loss_grad({kd})"]
    return "\n".join(lines + ["", "", f"EXPORTS = {exports!r}", ""])


def source(program, optimizer, classes, in_size, blas=False):
    """Python source of `forward(...)` (inference) for `program` and, with `optimizer` 'sgd'
    or 'adam', of the training `step(...)`; dense layers call BLAS through numpy.dot when
    `blas` (numba needs SciPy for that)."""
    head = [
        f"# generated by edgekd.kernels.step_numba v{VERSION} for numba_twins {_twins_digest()}",
        f"# program: {program!r}, optimizer: {optimizer}",
        "import numpy as np",
        "from numba import njit",
        "from edgekd.kernels.numba_twins import (_act, _act_grad, dense_forward, dense_backward, conv2d_forward,",
        "    conv2d_backward, maxpool2d_forward, maxpool2d_backward, avgpool2d_forward,",
        "    avgpool2d_backward, kd_loss_grad, sgd_update, adam_update)",
    ]
    forward, forward_sizes = _forward_source(program, classes, in_size, blas)
    if optimizer is None:
        return "\n".join(head + forward) + "\n" + forward_sizes + _exports("", None)
    g = _Gen()
    logits, views = _emit_forward(g, program, in_size, blas)
    _emit_loss(g, logits, classes)
    _emit_backward(g, program, views, blas)
    args = _emit_update(g, optimizer)
    g.emit("return loss, correct")
    g.lines[:0] = _batch_copies(g, in_size, classes)
    step_args = ("x_in, t_in, y, P, G, S1, S2, WF, WI, grad, kl, agree, temperature, alpha, "
                 + args)
    step = ["", "", _JIT, f"def step({step_args}):"]
    return "\n".join(head + step + g.lines + forward) + "\n" + \
        _sizes_source("sizes", g, in_size, classes) + forward_sizes + _exports(step_args, optimizer)


_loaded = {}


def have_blas():
    """numba's numpy.dot calls BLAS through SciPy's bindings."""
    return importlib.util.find_spec("scipy") is not None


def compile_step(program, optimizer, classes, in_size):
    """The compiled functions of `program`: forward and forward_sizes; step, sizes and
    kd_loss_grad unless `optimizer` is None (a teacher's). They come from the ahead-of-time
    build when this machine has or can make one (kernels/aot.py; `aot` says so), else from
    numba's JIT with its on-disk cache. The source is generated once into the cache
    directory; later processes load what it built."""
    src = source(program, optimizer, classes, in_size, blas=have_blas())
    digest = hashlib.sha256(src.encode()).hexdigest()[:20]
    root = cache_dir()
    path = os.path.join(root, f"edgekd_step_{digest}.py")
    if path in _loaded:
        return _loaded[path]
    if not os.path.exists(path):
        os.makedirs(root, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(src)
        os.replace(tmp, path)  # never rewritten afterwards: numba's cache keys on its mtime
    name = f"edgekd_step_{digest}"
    mod = aot.load(path, name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    _loaded[path] = Compiled(mod)
    return _loaded[path]


class Compiled:
    """One program's compiled functions, from its ahead-of-time module or its JIT one."""

    def __init__(self, mod):
        self.aot = not hasattr(mod, "EXPORTS")
        self.step, self.sizes = getattr(mod, "step", None), getattr(mod, "sizes", None)
        self.forward, self.forward_sizes = mod.forward, mod.forward_sizes
        self.kd_loss_grad = getattr(mod, "kd_loss_grad", None) if self.aot else mod.kd_loss_grad
