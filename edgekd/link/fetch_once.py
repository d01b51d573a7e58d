"""Fetch once, train offline: the first epoch streams everything and the device keeps it;
later epochs replay from memory with no link traffic. For devices with RAM to spare, and as
the baseline that halting is measured against."""

import numpy as np

from ..source import Batch, SoftLabelSource
from ..order import epoch_order, split_validation


class FetchOnceSource(SoftLabelSource):
    def __init__(self, inner):
        self.inner = inner
        self.first = None

    bytes_down = property(lambda self: self.inner.bytes_down)
    bytes_up = property(lambda self: self.inner.bytes_up)
    bytes_eval = property(lambda self: self.inner.bytes_eval)
    bytes_wire = property(lambda self: self.inner.bytes_wire)

    def open(self, hello):
        w = self.inner.open(hello)
        self.hello = hello
        self.train_ids, _ = split_validation(w.num_train, hello.val_fraction, hello.seed)
        self.x = self.y = self.soft = None
        return w

    def epoch(self, epoch, plan=None):
        if self.first is None or self.first == epoch:
            self.first = epoch
            for b in self.inner.epoch(epoch):
                self._keep(b)
                yield b
            return
        order = epoch_order(self.train_ids, self.hello.seed, epoch, self.inner.halted.mask) \
            if plan is None else plan
        for i in range(0, len(order), self.hello.batch):
            ids = order[i:i + self.hello.batch]
            yield Batch(ids, self.x[ids], self.y[ids], self.soft[ids])

    def _keep(self, b):
        if self.x is None:
            n = len(self.inner.halted)
            self.x = np.zeros((n,) + b.x.shape[1:], np.float32)
            self.y = np.zeros(n, np.int64)
            self.soft = np.zeros((n, b.soft.shape[1]), np.float32)
        self.x[b.ids], self.y[b.ids], self.soft[b.ids] = b.x, b.y, b.soft

    def holds(self):
        """After the first epoch, every training sample is in memory."""
        if self.first is None or self.x is None:
            return None
        return np.ones(len(self.x), bool)

    def settings(self):
        return self.inner.settings()

    def report(self, epoch, cursor, halted, woken):
        """The first epoch reports to the host (which updates the inner source's halted
        set); later ones only update that set, which the offline epochs read."""
        if epoch == self.first:
            self.inner.report(epoch, cursor, halted, woken)
        else:
            self.inner.halted.update(halted, woken)

    def validation(self):
        return self.inner.validation()

    def test(self):
        return self.inner.test()

    def stop(self, reason):
        self.inner.stop(reason)

    def close(self):
        self.inner.close()

    def naive_bytes(self, epochs, num_train, batch):
        return self.inner.naive_bytes(epochs, num_train, batch)
