"""Supervised training of a teacher on hard labels (the host's job before distillation)."""

import numpy as np

from .optim import make_optimizer, scheduled_lr
from .steps import accuracy, kd_step, one_hot_logits


# a teacher's training, unless told otherwise (`edgekd teacher` shows these as its defaults)
EPOCHS, BATCH, LR, OPTIMIZER = 30, 64, 3e-3, "adam"


def fit(model, data, epochs=EPOCHS, batch=BATCH, lr=LR, optimizer=OPTIMIZER, weight_decay=0.0,
        seed=0, on_epoch=None, lr_schedule="cosine"):
    """Cross-entropy training (the KD step with alpha 0). Returns per-epoch history."""
    opt = make_optimizer(optimizer, model.trainables(), lr, weight_decay)
    n = len(data.y_train)
    history = []
    for epoch in range(epochs):
        opt.lr = np.float32(scheduled_lr(lr, lr_schedule, epoch, epochs))
        order = np.random.default_rng([seed, epoch]).permutation(n)
        loss = 0.0
        for i in range(0, n, batch):
            ids = order[i:i + batch]
            y = data.y_train[ids]
            res = kd_step(model, opt, data.x_train[ids], one_hot_logits(y, model.num_classes),
                          y, 1.0, 0.0)
            loss += res.loss * len(ids)
        row = {"epoch": epoch + 1, "loss": loss / n,
               "test_accuracy": accuracy(model, data.x_test, data.y_test)}
        history.append(row)
        if on_epoch:
            on_epoch(row)
    return history
