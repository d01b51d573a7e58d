"""KD loss and cross-entropy, each returning (loss, gradient w.r.t. the student logits).

KD, as DESIGN.md defines it, with t teacher logits, s student logits, p = softmax:
    L = a * T^2 * KL(p(t/T) || p(s/T)) + (1 - a) * CE(y, p(s))
    dL/ds = a * T * (p(s/T) - p(t/T)) + (1 - a) * (p(s) - onehot(y))
both averaged over the batch. The per-sample KL at temperature T comes back too: it is the
halting signal, so early halting costs no extra forward pass.
"""

from dataclasses import dataclass

import numpy as np

from ..kernels.softmax import log_softmax


@dataclass
class KDResult:
    loss: float
    grad: np.ndarray        # [B, C], dL/ds
    kl: np.ndarray          # [B], KL(p_T || p_S) at temperature T, per sample
    agree: np.ndarray       # [B], argmax(student) == argmax(teacher)


def cross_entropy(s, y):
    """Mean CE of integer labels y under logits s; returns (loss, dL/ds)."""
    n = s.shape[0]
    logp = log_softmax(s)
    loss = -float(logp[np.arange(n), y].mean())
    grad = np.exp(logp)
    grad[np.arange(n), y] -= 1
    return loss, (grad / np.float32(n)).astype(np.float32, copy=False)


def kd_loss(s, t, y, temperature=4.0, alpha=0.9):
    n = s.shape[0]
    T = np.float32(temperature)
    a = np.float32(alpha)
    log_ps_T = log_softmax(s / T)
    log_pt_T = log_softmax(t / T)
    pt_T = np.exp(log_pt_T)
    kl = (pt_T * (log_pt_T - log_ps_T)).sum(axis=1)
    grad = a * T * (np.exp(log_ps_T) - pt_T)
    loss = float(a * T * T * kl.mean())
    if alpha < 1:
        ce, ce_grad = cross_entropy(s, y)
        loss += float((1 - a) * ce)
        grad += (1 - a) * ce_grad * np.float32(n)
    agree = s.argmax(axis=1) == t.argmax(axis=1)
    return KDResult(loss, (grad / np.float32(n)).astype(np.float32, copy=False),
                    np.maximum(kl, 0).astype(np.float32), agree)
