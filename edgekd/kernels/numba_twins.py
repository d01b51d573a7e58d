"""Numba twins of the numpy kernels: the same signatures and results (to float32 round-off),
as tight loops compiled once and cached on disk. Imported only when numba is present and the
numba backend is chosen; the numpy kernels remain the reference."""

import math

import numpy as np
from numba import njit

from .activations import RELU, RELU6, TANH

JIT = {"cache": True, "nogil": True}
FAST = {"cache": True, "nogil": True, "fastmath": {"reassoc", "contract"}}  # vectorized sums
# Per-element helpers are inlined by numba itself: a caller compiled while the helper came from
# numba's disk cache would otherwise call its machine code once per element (a third slower
# conv2d step) instead of folding it into its own loops.
ELEMENT = {"cache": True, "nogil": True, "inline": "always"}


@njit(**FAST)
def _mm(a, b, out):
    """out = a @ b, rows streamed so the inner loop runs over contiguous memory (no BLAS: numba's
    np.dot would need scipy)."""
    out[:] = 0
    for i in range(a.shape[0]):
        o = out[i]
        for k in range(a.shape[1]):
            av = a[i, k]
            bk = b[k]
            for j in range(b.shape[1]):
                o[j] += av * bk[j]


@njit(**FAST)
def _mm_tn(a, b, out):
    """out = a.T @ b."""
    out[:] = 0
    for i in range(a.shape[0]):
        bi = b[i]
        for k in range(a.shape[1]):
            av = a[i, k]
            o = out[k]
            for j in range(b.shape[1]):
                o[j] += av * bi[j]


@njit(**FAST)
def _mm_nt(a, b, out):
    """out = a @ b.T."""
    for i in range(a.shape[0]):
        ai = a[i]
        for k in range(b.shape[0]):
            bk = b[k]
            acc = np.float32(0)
            for j in range(a.shape[1]):
                acc += ai[j] * bk[j]
            out[i, k] = acc


@njit(**ELEMENT)
def _act(v, code):
    if code == RELU:
        return v if v > 0 else np.float32(0)
    if code == RELU6:
        return min(max(v, np.float32(0)), np.float32(6))
    if code == TANH:
        return np.float32(math.tanh(v))
    return v


@njit(**ELEMENT)
def _act_grad(y, code):
    if code == RELU:
        return np.float32(1) if y > 0 else np.float32(0)
    if code == RELU6:
        return np.float32(1) if 0 < y < 6 else np.float32(0)
    if code == TANH:
        return np.float32(1) - y * y
    return np.float32(1)


@njit(**JIT)
def dense_forward(x, w, b, code, out):
    _mm(x, w, out)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = _act(out[i, j] + b[j], code)


@njit(**JIT)
def dense_backward(x, w, y, dy, code, dw, db, dx):
    if code != 0:
        for i in range(dy.shape[0]):
            for j in range(dy.shape[1]):
                dy[i, j] *= _act_grad(y[i, j], code)
    _mm_tn(x, dy, dw)
    for j in range(dy.shape[1]):
        acc = np.float32(0)
        for i in range(dy.shape[0]):
            acc += dy[i, j]
        db[j] = acc
    if dx is not None:
        _mm_nt(dy, w, dx)


@njit(**JIT)
def conv2d_forward(x, w, b, sh, sw, code, out):
    kh, kw, c, f = w.shape
    n, ho, wo, _ = out.shape
    for s in range(n):
        for oh in range(ho):
            for ow in range(wo):
                o = out[s, oh, ow]
                o[:] = b
                for i in range(kh):
                    for j in range(kw):
                        xr = x[s, oh * sh + i, ow * sw + j]
                        wr = w[i, j]
                        for ci in range(c):
                            xv = xr[ci]
                            wc = wr[ci]
                            for fi in range(f):
                                o[fi] += xv * wc[fi]
                for fi in range(f):
                    o[fi] = _act(o[fi], code)


@njit(**JIT)
def conv2d_backward(x, w, y, dy, sh, sw, code, dw, db, dx):
    kh, kw, c, f = w.shape
    n, ho, wo, _ = dy.shape
    dw[:] = 0
    db[:] = 0
    if dx is not None:
        dx[:] = 0
    for s in range(n):
        for oh in range(ho):
            for ow in range(wo):
                g = dy[s, oh, ow]
                yr = y[s, oh, ow]
                for fi in range(f):
                    g[fi] *= _act_grad(yr[fi], code)
                    db[fi] += g[fi]
                for i in range(kh):
                    for j in range(kw):
                        xr = x[s, oh * sh + i, ow * sw + j]
                        wr = w[i, j]
                        dwr = dw[i, j]
                        for ci in range(c):
                            xv = xr[ci]
                            wc = wr[ci]
                            dwc = dwr[ci]
                            acc = np.float32(0)
                            for fi in range(f):
                                dwc[fi] += xv * g[fi]
                                acc += wc[fi] * g[fi]
                            if dx is not None:
                                dx[s, oh * sh + i, ow * sw + j, ci] += acc


@njit(**JIT)
def maxpool2d_forward(x, ph, pw, sh, sw, out, arg):
    n, ho, wo, c = out.shape
    for s in range(n):
        for oh in range(ho):
            for ow in range(wo):
                for ci in range(c):
                    best = x[s, oh * sh, ow * sw, ci]
                    at = 0
                    for i in range(ph):
                        for j in range(pw):
                            v = x[s, oh * sh + i, ow * sw + j, ci]
                            if v > best:
                                best, at = v, i * pw + j
                    out[s, oh, ow, ci] = best
                    arg[s, oh, ow, ci] = at


@njit(**JIT)
def maxpool2d_max(x, ph, pw, sh, sw, out):
    """Inference: the loops above already cost no more than the max alone."""
    maxpool2d_forward(x, ph, pw, sh, sw, out, np.empty(out.shape, np.int64))


@njit(**JIT)
def maxpool2d_backward(arg, ph, pw, sh, sw, dy, dx):
    dx[:] = 0
    n, ho, wo, c = dy.shape
    for s in range(n):
        for oh in range(ho):
            for ow in range(wo):
                for ci in range(c):
                    k = arg[s, oh, ow, ci]
                    dx[s, oh * sh + k // pw, ow * sw + k % pw, ci] += dy[s, oh, ow, ci]


@njit(**JIT)
def avgpool2d_forward(x, ph, pw, sh, sw, out):
    n, ho, wo, c = out.shape
    scale = np.float32(1.0 / (ph * pw))
    for s in range(n):
        for oh in range(ho):
            for ow in range(wo):
                for ci in range(c):
                    acc = np.float32(0)
                    for i in range(ph):
                        for j in range(pw):
                            acc += x[s, oh * sh + i, ow * sw + j, ci]
                    out[s, oh, ow, ci] = acc * scale


@njit(**JIT)
def avgpool2d_backward(ph, pw, sh, sw, dy, dx):
    dx[:] = 0
    n, ho, wo, c = dy.shape
    scale = np.float32(1.0 / (ph * pw))
    for s in range(n):
        for oh in range(ho):
            for ow in range(wo):
                for ci in range(c):
                    g = dy[s, oh, ow, ci] * scale
                    for i in range(ph):
                        for j in range(pw):
                            dx[s, oh * sh + i, ow * sw + j, ci] += g


LOG2E = np.float32(1.4426950408889634)
LN2_HI, LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 = HI + LO


@njit(**JIT)
def _exp_nonpositive_(z, bits):
    """z = exp(z) in place for z <= 0 (arguments of a softmax less its max), as loops LLVM
    vectorises, where math.exp is one libm call per element: Cephes' expf, a degree-5
    polynomial on [-ln2/2, ln2/2] times 2^k made from exponent bits (within 1e-7 relative of
    exp; below -87, where exp underflows float32, it gives exp(-87)). No fast-math: every
    element is computed the same way whatever the vector split, so bits do not depend on where
    the arrays sit. `bits`: int32 scratch of z's length."""
    scale = bits.view(np.float32)
    for k in range(z.shape[0]):
        x = max(z[k], np.float32(-87.0))
        f = np.floor(x * LOG2E + np.float32(0.5))
        r = x - f * LN2_HI - f * LN2_LO
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        z[k] = p * r * r + r + np.float32(1)
        bits[k] = (np.int32(f) + np.int32(127)) << np.int32(23)
    for k in range(z.shape[0]):
        z[k] *= scale[k]


@njit(**JIT)
def kd_loss_grad(s, t, y, temperature, alpha, grad, kl):
    """Three softmaxes (student at T, teacher at T, student at 1): the maxima row by row, then
    every exponential of the batch in one vectorised pass, then sums, logs and gradients."""
    n, c = s.shape
    inv_t = np.float32(1.0 / temperature)
    a = np.float32(alpha)
    kd_scale = np.float32(alpha * temperature / n)
    ce_scale = np.float32((1 - alpha) / n)
    ce = alpha < 1
    e = np.empty((3, n, c), np.float32)   # student at T, teacher at T, student at 1
    mx = np.empty((2, n), np.float32)
    for i in range(n):
        ms = s[i, 0]
        mt = t[i, 0]
        for j in range(1, c):
            ms = max(ms, s[i, j])
            mt = max(mt, t[i, j])
        mx[0, i] = ms
        mx[1, i] = mt
        for j in range(c):
            e[0, i, j] = (s[i, j] - ms) * inv_t
            e[1, i, j] = (t[i, j] - mt) * inv_t
            e[2, i, j] = s[i, j] - ms
    flat = e.reshape(3 * n * c)[:(3 if ce else 2) * n * c]
    _exp_nonpositive_(flat, np.empty(flat.shape[0], np.int32))
    total_kl = 0.0
    total_ce = 0.0
    for i in range(n):
        ss = np.float32(0)
        st = np.float32(0)
        for j in range(c):
            ss += e[0, i, j]
            st += e[1, i, j]
        lse_s = np.float32(math.log(ss))
        lse_t = np.float32(math.log(st))
        inv_s = np.float32(1) / ss
        inv_tt = np.float32(1) / st
        k = np.float32(0)
        for j in range(c):
            pt = e[1, i, j] * inv_tt
            # log pt - log ps, each log p = (z - max) * scale - lse
            k += pt * (((t[i, j] - mx[1, i]) * inv_t - lse_t) - ((s[i, j] - mx[0, i]) * inv_t - lse_s))
            grad[i, j] = kd_scale * (e[0, i, j] * inv_s - pt)
        kl[i] = max(k, np.float32(0))
        total_kl += kl[i]
        if ce:
            s1 = np.float32(0)
            for j in range(c):
                s1 += e[2, i, j]
            inv_1 = np.float32(1) / s1
            total_ce -= s[i, y[i]] - mx[0, i] - np.float32(math.log(s1))
            for j in range(c):
                grad[i, j] += ce_scale * (e[2, i, j] * inv_1 - (np.float32(1) if j == y[i] else np.float32(0)))
    return a * temperature * temperature * total_kl / n + (1 - alpha) * total_ce / n


@njit(**JIT)
def sgd_update(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    for i in range(p.shape[0]):
        d = g[i] + weight_decay * p[i]
        if momentum != 0:
            if first:
                buf[i] = d
            else:
                buf[i] = momentum * buf[i] + d
            d = d + momentum * buf[i] if nesterov else buf[i]
        p[i] -= lr * d


@njit(**JIT)
def adam_update(p, g, m, v, lr, b1, b2, eps, weight_decay, step, decoupled):
    c1 = 1 - b1 ** step
    c2 = math.sqrt(1 - b2 ** step)
    step_size = lr / c1
    for i in range(p.shape[0]):
        if decoupled:
            p[i] *= 1 - lr * weight_decay
            d = g[i]
        else:
            d = g[i] + weight_decay * p[i]
        m[i] = b1 * m[i] + (1 - b1) * d
        v[i] = b2 * v[i] + (1 - b2) * d * d
        p[i] -= step_size * (m[i] / (math.sqrt(v[i]) / c2 + eps))
