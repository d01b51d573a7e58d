"""The trainable last layer in float32, as the board keeps it: initialised from the
deployed (dequantized) dense layer, trained by SGD on the KD loss of edgekd.distill."""

import numpy as np

from edgekd.distill.losses import kd_loss
from edgekd.errors import EdgekdError


class FloatHead:
    def __init__(self, w, b):
        self.w0 = np.array(w, np.float32)
        self.b0 = np.array(b, np.float32)
        self.reset()

    def reset(self):
        self.w, self.b = self.w0.copy(), self.b0.copy()
        self.trained = False

    def load(self, flat):
        """Weights from the flat float32 array W [out, in] then b (SET_WEIGHTS)."""
        n = self.w.size
        self.w = np.asarray(flat[:n], np.float32).reshape(self.w.shape).copy()
        self.b = np.asarray(flat[n:], np.float32).copy()
        self.trained = True

    @property
    def nbytes(self):
        """RAM the board spends on it: weights and their gradients."""
        return 2 * 4 * (self.w.size + self.b.size)

    def logits(self, h):
        return h @ self.w.T + self.b

    def step(self, h, teacher, labels, lr, temperature, alpha):
        """KD loss of the batch before the step, per-sample KL and argmax agreement; then
        one SGD step when lr > 0 (lr 0 only measures)."""
        r = kd_loss(self.logits(h), np.asarray(teacher, np.float32),
                    np.asarray(labels, np.int64), temperature, alpha)
        if not np.isfinite(r.loss):
            raise EdgekdError("TRAIN_LAST: the loss is not finite; the weights are unchanged")
        if lr > 0:
            lr = np.float32(lr)
            with np.errstate(over="ignore", invalid="ignore"):
                w = self.w - lr * (r.grad.T @ h)
                b = self.b - lr * r.grad.sum(axis=0)
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise EdgekdError("TRAIN_LAST: the step would overflow a weight; the weights "
                                  "are unchanged")
            self.w, self.b = w.astype(np.float32), b.astype(np.float32)
            self.trained = True
        return r.loss, r.kl, r.agree
