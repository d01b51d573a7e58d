"""KD loss and cross-entropy, each returning (loss, gradient w.r.t. the student logits).

KD as edgekd defines it, with t teacher logits, s student logits, p = softmax:
    L = a * T^2 * KL(p(t/T) || p(s/T)) + (1 - a) * CE(y, p(s))
    dL/ds = a * T * (p(s/T) - p(t/T)) + (1 - a) * (p(s) - onehot(y))
both averaged over the batch. The per-sample KL at temperature T comes back too: it is the
halting signal, so early halting costs no extra forward pass.
"""

from dataclasses import dataclass

import numpy as np

from ..kernels.backend import active
from ..kernels.softmax import log_softmax


@dataclass
class KDResult:
    loss: float
    grad: np.ndarray        # [B, C], dL/ds
    kl: np.ndarray          # [B], KL(p_T || p_S) at temperature T, per sample
    agree: np.ndarray       # [B], argmax(student) == argmax(teacher)
    correct: int = 0        # how many argmax(student) == y


def cross_entropy(s, y):
    """Mean CE of integer labels y under logits s; returns (loss, dL/ds)."""
    n = s.shape[0]
    logp = log_softmax(s)
    loss = -float(logp[np.arange(n), y].mean())
    grad = np.exp(logp)
    grad[np.arange(n), y] -= 1
    return loss, (grad / np.float32(n)).astype(np.float32, copy=False)


def kd_loss(s, t, y, temperature=4.0, alpha=0.9, grad=None, kl=None, kernel=None):
    """KD loss through the active backend, or through `kernel` (kd_loss_grad's signature:
    a compiled program's own: edgekd.nn.program); `grad` and `kl` may be caller-owned
    buffers (C-contiguous float32)."""
    s, t = np.ascontiguousarray(s, np.float32), np.ascontiguousarray(t, np.float32)
    grad = np.empty_like(s) if grad is None else grad
    kl = np.empty(len(s), np.float32) if kl is None else kl
    y = np.ascontiguousarray(y, np.int64)
    if s.ndim != 2 or t.shape != s.shape or y.shape != s.shape[:1]:
        raise ValueError(f"kd_loss: logits {s.shape}, soft labels {t.shape}, labels {y.shape}")
    kernel = kernel or active().kd_loss_grad
    loss = kernel(s, t, y, float(temperature), float(alpha), grad, kl)
    top = s.argmax(axis=1)
    return KDResult(float(loss), grad, kl, top == t.argmax(axis=1), int(np.count_nonzero(top == y)))


def teacher_information(soft, temperature):
    """Per sample, what the teacher's soft label says beyond a uniform guess: KL(p_T || uniform)
    = log C - H(p_T) at temperature T. Halting's relative threshold scales with it, since a
    soft teacher (near-uniform p_T) makes every KL small whether or not the student learned."""
    logp = log_softmax(np.asarray(soft, np.float32) / np.float32(temperature))
    return (np.log(np.float32(soft.shape[1])) + (np.exp(logp) * logp).sum(axis=1)).astype(np.float32)
