"""The KD loss and its gradient w.r.t. the student logits, in one pass (temperature T,
weight a on the soft term):

    L = a * T^2 * KL(p(t/T) || p(s/T)) + (1 - a) * CE(y, p(s))
    dL/ds = a * T * (p(s/T) - p(t/T)) + (1 - a) * (p(s) - onehot(y))

averaged over the batch, computed with log-sum-exp. Also returns, per sample, the KL at
temperature T: the early-halting signal, free from the same pass."""

import threading
from types import SimpleNamespace

import numpy as np

_LOCAL = threading.local()
_KEEP = 64             # work sets kept per thread (one per batch shape; halting makes a few)
_KEEP_MAX = 1 << 16    # logits per call above which the work set is not kept (a whole split)


def _work(n, c, k):
    """Scratch for one call, kept per thread and batch shape: the stacked scaled logits z and
    their softmaxes p [k, n, c] (with the per-softmax views), a [n, c] product, a [k, n, 1]
    column, the one-hot labels and the class indices they are compared with. Training
    batches reuse theirs; a call on a whole split gets arrays that go when it returns."""
    sets = getattr(_LOCAL, "sets", None)
    if sets is None:
        sets = _LOCAL.sets = {}
    w = sets.get((n, c, k))
    if w is None:
        z, p = np.empty((k, n, c), np.float32), np.empty((k, n, c), np.float32)
        w = SimpleNamespace(
            z=z, p=p, zs=z[0], zt=z[1], z1=z[k - 1], ps=p[0], pt=p[1], p1=p[k - 1],
            d=np.empty((n, c), np.float32), col=np.empty((k, n, 1), np.float32),
            onehot=np.empty((n, c), np.float32), classes=np.arange(c))
        if n * c <= _KEEP_MAX:
            if len(sets) >= _KEEP:
                sets.clear()
            sets[(n, c, k)] = w
    return w


_COEFS = {}


def _coefs(temperature, alpha, n):
    """The float32 constants of one call, as numpy's float32 arithmetic rounds them (computed
    once per (T, alpha, batch size): numpy scalar arithmetic costs a microsecond an operation)."""
    key = (temperature, alpha, n)
    c = _COEFS.get(key)
    if c is None:
        if len(_COEFS) >= _KEEP:
            _COEFS.clear()
        T, a, nf = np.float32(temperature), np.float32(alpha), np.float32(n)
        c = _COEFS[key] = (T, float(a * T * T), a * T / nf, (1 - a) / nf, float(1 - a))
    return c


def _mean(v, n):
    """v.mean() of a float32 vector, bit for bit, without np.mean's Python wrapper (a float32
    sum divided in float64 by the count, rounded back to float32)."""
    return np.float32(float(np.add.reduce(v)) / n)


def kd_loss_grad(s, t, y, temperature, alpha, grad, kl):
    """Fills grad [B, C] and kl [B]; returns the mean loss.

    The softmaxes it needs (student at T, teacher at T, and the student at 1 when alpha < 1)
    are stacked on one array, so each step of log-sum-exp is one NumPy call for all of them:
    at a device's batch sizes the cost is the number of calls, not the arithmetic."""
    n, c = s.shape
    w = _work(n, c, 3 if alpha < 1 else 2)
    T, kd_loss_scale, kd_grad_scale, ce_grad_scale, ce_loss_scale = _coefs(temperature, alpha, n)
    z, p, col = w.z, w.p, w.col
    np.divide(s, T, out=w.zs)
    np.divide(t, T, out=w.zt)
    if alpha < 1:
        w.z1[...] = s
    np.maximum.reduce(z, 2, None, col, True)
    z -= col
    np.exp(z, out=p)
    np.add.reduce(p, 2, None, col, True)
    np.log(col, out=col)
    z -= col                      # z: log-softmaxes
    np.exp(z, out=p)              # p: softmaxes
    d = w.d
    np.subtract(w.zt, w.zs, out=d)
    d *= w.pt
    np.add.reduce(d, 1, None, kl)
    np.maximum(kl, 0, out=kl)
    np.subtract(w.ps, w.pt, out=grad)
    grad *= kd_grad_scale
    loss = float(np.float32(kd_loss_scale * float(_mean(kl, n))))
    if alpha < 1:
        onehot, p1 = w.onehot, w.p1
        np.equal(y[:, None], w.classes, out=onehot, casting="unsafe")
        # the label's log-probability, summed: every other product is an exact zero
        loss -= ce_loss_scale * float(np.float32(float(np.vdot(w.z1, onehot)) / n))
        p1 -= onehot
        p1 *= ce_grad_scale
        grad += p1
    return loss
