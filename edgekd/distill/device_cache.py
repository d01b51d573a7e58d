"""The samples the device keeps, within its memory budget, as the link carried them.

A kept sample costs the link one transfer for the whole run: the device reports it halted,
so the host never sends it again, and the trainer replays it from here. What the budget
cannot hold is streamed every epoch until it settles. Rows stay encoded (u8 inputs, top-k
soft labels: the bytes that arrived) and are decoded only for the step that replays them,
so `--cache-budget` is what the device really spends.
"""

import numpy as np

from ..errors import EdgekdError

LABEL_BYTES = 2    # a kept label, as the link carries it (u16)


class DeviceCache:
    """Up to budget // row_bytes rows over ids 0..n-1 of the training split. `codec` is the
    source's row codec (None: the source gives no rows to keep, so nothing is kept)."""

    def __init__(self, n, codec, budget):
        self.codec = codec
        width = codec.nbytes if codec is not None else 0
        self.row_bytes = width + LABEL_BYTES
        self.capacity = min(n, int(budget) // self.row_bytes) if codec is not None else 0
        self.rows = np.zeros((self.capacity, width), np.uint8)
        self.y = np.zeros(self.capacity, np.uint16)
        self.slot = np.full(n, -1, np.int32)
        self.used = 0

    @property
    def kept(self):
        return self.slot >= 0

    @property
    def nbytes(self):
        return self.used * self.row_bytes

    def admit(self, ids, rows, y):
        """Keep rows of `ids` (not kept yet) while there is room; returns the ids kept, in order."""
        take = min(len(ids), self.capacity - self.used)
        if take <= 0:
            return ids[:0]
        ids = ids[:take]
        slots = np.arange(self.used, self.used + take)
        self.rows[slots], self.y[slots] = rows[:take], y[:take]
        self.slot[ids] = slots
        self.used += take
        return ids

    def get(self, ids):
        """(x, soft, y, rows) of kept ids, decoded for a training step."""
        s = self.slot[ids]
        x, soft = self.codec.decode(self.rows[s])
        return x, soft, self.y[s].astype(np.int64), self.rows[s]

    def state(self):
        if not self.capacity:
            return {}
        return {"cache.slot": self.slot, "cache.rows": self.rows[:self.used],
                "cache.y": self.y[:self.used]}

    def load_state(self, arrays):
        if not self.capacity or "cache.slot" not in arrays:
            return
        used = len(arrays["cache.y"])
        rows, slot = arrays["cache.rows"], arrays["cache.slot"]
        if rows.shape != (used, self.rows.shape[1]) or used > self.capacity \
                or slot.shape != self.slot.shape or slot.max(initial=-1) >= used:
            raise EdgekdError("the checkpoint's kept samples do not fit this run's codecs and "
                              "cache budget")
        self.slot[...] = slot
        self.rows[:used], self.y[:used] = arrays["cache.rows"], arrays["cache.y"]
        self.used = used
