"""Numba twins of the numpy kernels: the same signatures and results (to float32 round-off),
as tight loops compiled once and cached on disk. Imported only when numba is present and the
numba backend is chosen; the numpy kernels remain the reference."""

import math

import numpy as np
from numba import njit

from .activations import RELU, RELU6, TANH

JIT = {"cache": True, "nogil": True}
FAST = {"cache": True, "nogil": True, "fastmath": {"reassoc", "contract"}}  # vectorized sums


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


@njit(**JIT)
def _act(v, code):
    if code == RELU:
        return v if v > 0 else np.float32(0)
    if code == RELU6:
        return min(max(v, np.float32(0)), np.float32(6))
    if code == TANH:
        return np.float32(math.tanh(v))
    return v


@njit(**JIT)
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


@njit(**JIT)
def _softmax_row(z, scale, p):
    """p = softmax(z * scale) in float32 (what the numpy kernels compute in); returns
    log(sum(exp(z * scale - max))) and the max, so log p_j = z_j * scale - max - lse."""
    m = z[0] * scale
    for j in range(1, z.shape[0]):
        m = max(m, z[j] * scale)
    acc = np.float32(0)
    for j in range(z.shape[0]):
        e = np.float32(math.exp(z[j] * scale - m))
        p[j] = e
        acc += e
    inv = np.float32(1) / acc
    for j in range(z.shape[0]):
        p[j] *= inv
    return m, np.float32(math.log(acc))


@njit(**JIT)
def kd_loss_grad(s, t, y, temperature, alpha, grad, kl):
    """One pass per row: three softmaxes (student at T, teacher at T, student at 1), each
    exponential computed once."""
    n, c = s.shape
    inv_t = np.float32(1.0 / temperature)
    a = np.float32(alpha)
    kd_scale = np.float32(alpha * temperature / n)
    ce_scale = np.float32((1 - alpha) / n)
    ps = np.empty(c, np.float32)
    pt = np.empty(c, np.float32)
    p1 = np.empty(c, np.float32)
    total_kl = 0.0
    total_ce = 0.0
    for i in range(n):
        ms, lse_s = _softmax_row(s[i], inv_t, ps)
        mt, lse_t = _softmax_row(t[i], inv_t, pt)
        k = np.float32(0)
        for j in range(c):
            # log pt - log ps, each log p = z * scale - max - lse
            d = (t[i, j] * inv_t - mt - lse_t) - (s[i, j] * inv_t - ms - lse_s)
            k += pt[j] * d
            grad[i, j] = kd_scale * (ps[j] - pt[j])
        kl[i] = max(k, np.float32(0))
        total_kl += kl[i]
        if alpha < 1:
            m1, lse_1 = _softmax_row(s[i], np.float32(1), p1)
            total_ce -= s[i, y[i]] - m1 - lse_1
            for j in range(c):
                grad[i, j] += ce_scale * (p1[j] - (np.float32(1) if j == y[i] else np.float32(0)))
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
