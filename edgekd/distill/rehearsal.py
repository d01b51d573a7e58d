"""The device's cache of settled samples, replayed under the rehearse and wake policies."""

import numpy as np


class RehearsalCache:
    """Device-side copy of settled samples (x, soft, y) for the rehearse and wake policies."""

    def __init__(self, n, input_shape, classes, enabled):
        self.enabled = enabled
        shape = (n,) if enabled else (0,)
        self.x = np.zeros(shape + tuple(input_shape), np.float32)
        self.soft = np.zeros(shape + (classes,), np.float32)
        self.y = np.zeros(shape, np.int64)
        self.has = np.zeros(shape, bool)

    def put(self, ids, batch):
        if not self.enabled or not len(ids):
            return
        rows = np.isin(batch.ids, ids)  # `ids` are a subset of the batch, in batch order
        self.x[ids], self.soft[ids], self.y[ids] = batch.x[rows], batch.soft[rows], batch.y[rows]
        self.has[ids] = True

    def get(self, ids):
        return self.x[ids], self.soft[ids], self.y[ids]

    def pick(self, settled, prob, seed, epoch):
        """This epoch's rehearsal ids: each cached settled sample with probability `prob`."""
        if not self.enabled:
            return np.zeros(0, np.int64)
        cand = np.flatnonzero(settled & self.has)
        draw = np.random.default_rng([seed, epoch, 2]).random(len(cand))
        return cand[draw < prob]

    def state(self):
        if not self.enabled:
            return {}
        return {"cache.x": self.x, "cache.soft": self.soft, "cache.y": self.y, "cache.has": self.has}

    def load_state(self, arrays):
        if self.enabled:
            self.x[...], self.soft[...] = arrays["cache.x"], arrays["cache.soft"]
            self.y[...], self.has[...] = arrays["cache.y"], arrays["cache.has"]
