"""The KD loss and its gradient w.r.t. the student logits, in one pass (temperature T,
weight a on the soft term):

    L = a * T^2 * KL(p(t/T) || p(s/T)) + (1 - a) * CE(y, p(s))
    dL/ds = a * T * (p(s/T) - p(t/T)) + (1 - a) * (p(s) - onehot(y))

averaged over the batch, computed with log-sum-exp. Also returns, per sample, the KL at
temperature T: the early-halting signal, free from the same pass."""

import numpy as np


def _log_softmax_(z):
    """log_softmax(z) over the last axis, computed in place in z (softmax.log_softmax's
    arithmetic, without its temporaries)."""
    z -= np.maximum.reduce(z, axis=-1, keepdims=True)
    z -= np.log(np.add.reduce(np.exp(z), axis=-1, keepdims=True))
    return z


_ROWS = {}


def _rows(n):
    """np.arange(n), kept: the label gather needs it every step."""
    r = _ROWS.get(n)
    if r is None:
        r = _ROWS[n] = np.arange(n)
    return r


def _mean(v, n):
    """v.mean() of a float32 vector, bit for bit, without np.mean's Python wrapper (a float32
    sum divided in float64 by the count, rounded back to float32)."""
    return np.float32(float(np.add.reduce(v)) / n)


def kd_loss_grad(s, t, y, temperature, alpha, grad, kl):
    """Fills grad [B, C] and kl [B]; returns the mean loss."""
    n = s.shape[0]
    T, a = np.float32(temperature), np.float32(alpha)
    log_ps = _log_softmax_(s / T)
    log_pt = _log_softmax_(t / T)
    pt = np.exp(log_pt)
    log_pt -= log_ps
    log_pt *= pt
    np.add.reduce(log_pt, axis=1, out=kl)
    np.maximum(kl, 0, out=kl)
    np.exp(log_ps, out=log_ps)
    log_ps -= pt
    np.multiply(log_ps, a * T / np.float32(n), out=grad)
    loss = float(a * T * T * _mean(kl, n))
    if alpha < 1:
        logp = _log_softmax_(s.copy())
        rows = _rows(n)
        loss -= float((1 - a) * _mean(logp[rows, y], n))
        np.exp(logp, out=logp)
        logp[rows, y] -= 1
        logp *= (1 - a) / np.float32(n)
        grad += logp
    return loss
