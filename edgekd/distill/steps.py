"""One optimisation step, shared by KD training and the teacher's supervised training."""

import numpy as np

from ..nn.program import compiled_forward
from .fused import fused_kd_step
from .losses import kd_loss


def kd_step(model, opt, x, soft, y, temperature, alpha):
    """Forward, KD loss, backward, update. Returns the loss result (with per-sample KL,
    in buffers reused by the next step of the same batch size)."""
    fused = fused_kd_step(model, opt)  # one compiled call on the numba backend, when it applies
    if fused is not None:
        return fused(x, soft, y, temperature, alpha)
    x, soft = model.aligned_batch(x, soft)
    logits = model.forward(x, training=True)
    bufs = model.loss_buffers(len(x))
    res = kd_loss(logits, soft, y, temperature, alpha, *bufs)
    model.backward(res.grad, input_grad=False)
    opt.step()
    return res


def accuracy(model, x, y):
    return float((model.predict(x).argmax(axis=1) == y).mean()) if len(y) else 0.0


def slice_metrics(model, batch, temperature):
    """Accuracy on labels, argmax agreement with the teacher, and mean KL(teacher || student)
    at `temperature` (agreement as a smooth signal), from one inference pass."""
    logits = model.predict(batch.x)
    fused = compiled_forward(model)  # its own KD kernel: evaluating loads nothing more
    res = kd_loss(logits, batch.soft, batch.y, temperature, 1.0,
                  kernel=fused and fused.compiled.kd_loss_grad)
    return {"accuracy": float((logits.argmax(axis=1) == batch.y).mean()),
            "agreement": float(res.agree.mean()), "kl": float(res.kl.mean())}


def one_hot_logits(y, classes):
    """Hard labels as 'teacher logits' so supervised training reuses the KD step with alpha 0."""
    return np.eye(classes, dtype=np.float32)[y]
