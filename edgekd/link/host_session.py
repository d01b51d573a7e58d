"""The host's side of one device session: split, epoch order, halted set, teacher soft labels.

Transport-free, so the in-process link and the TCP server share it.
"""

import numpy as np

from ..errors import EdgekdError
from ..source import Batch, HaltedSet, Welcome
from ..order import epoch_order, split_validation


class HostSession:
    def __init__(self, teacher, data):
        self.teacher = teacher      # has .logits(x) -> float32 [n, classes], .num_classes
        self.data = data

    def open(self, hello):
        d = self.data
        if tuple(hello.input_shape) != tuple(d.input_shape):
            raise EdgekdError(f"the student expects input shape {list(hello.input_shape)}, "
                              f"but the host's data set {d.name} has {list(d.input_shape)}")
        if hello.num_classes != self.teacher.num_classes:
            raise EdgekdError(f"the student has {hello.num_classes} classes, the teacher "
                              f"{self.teacher.num_classes}")
        if d.num_classes > self.teacher.num_classes:
            raise EdgekdError(f"the data set has {d.num_classes} classes, the teacher only "
                              f"{self.teacher.num_classes}")
        if not 0 <= hello.val_fraction < 1:
            raise EdgekdError(f"val_fraction must be in [0, 1), got {hello.val_fraction}")
        n = len(d.y_train)
        self.seed, self.batch_size = hello.seed, hello.batch
        self.train_ids, self.val_ids = split_validation(n, hello.val_fraction, hello.seed)
        self.halted = HaltedSet(n, hello.halted)
        return Welcome(n, len(self.val_ids), len(self.data.y_test),
                       int(np.prod(d.input_shape)))

    def order(self, epoch):
        return epoch_order(self.train_ids, self.seed, epoch, self.halted.mask)

    def soft_labels(self, x):
        soft = np.asarray(self.teacher.logits(x), np.float32)
        if not np.all(np.isfinite(soft)):
            raise EdgekdError("the teacher produced NaN or inf logits")
        return soft

    def batch(self, ids):
        x = self.data.x_train[ids]
        return Batch(ids, x, self.data.y_train[ids], self.soft_labels(x))
