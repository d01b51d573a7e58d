"""The KD loss and its gradient w.r.t. the student logits, in one pass (DESIGN.md):

    L = a * T^2 * KL(p(t/T) || p(s/T)) + (1 - a) * CE(y, p(s))
    dL/ds = a * T * (p(s/T) - p(t/T)) + (1 - a) * (p(s) - onehot(y))

averaged over the batch, computed with log-sum-exp. Also returns, per sample, the KL at
temperature T: the early-halting signal, free from the same pass."""

import numpy as np

from .softmax import log_softmax


def kd_loss_grad(s, t, y, temperature, alpha, grad, kl):
    """Fills grad [B, C] and kl [B]; returns the mean loss."""
    n = s.shape[0]
    T, a = np.float32(temperature), np.float32(alpha)
    log_ps = log_softmax(s / T)
    log_pt = log_softmax(t / T)
    pt = np.exp(log_pt)
    np.add.reduce(pt * (log_pt - log_ps), axis=1, out=kl)
    np.maximum(kl, 0, out=kl)
    np.multiply(np.exp(log_ps) - pt, a * T / np.float32(n), out=grad)
    loss = float(a * T * T * kl.mean())
    if alpha < 1:
        logp = log_softmax(s)
        rows = np.arange(n)
        loss -= float((1 - a) * logp[rows, y].mean())
        p = np.exp(logp)
        p[rows, y] -= 1
        grad += p * ((1 - a) / np.float32(n))
    return loss
