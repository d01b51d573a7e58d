"""One epoch's training rows: what the host streams and what the device keeps, merged in the
epoch order and cut into steps.

The plan is `epoch_order(train_ids, seed, epoch, ~planned)`: every sample the device trains
this epoch, in the order the host would have streamed them all. The host streams the planned
samples the device does not keep, in the same relative order (its halted set is the device's
kept and settled samples), so a run that keeps nothing trains on exactly the batches of plain
streaming, and a run that keeps everything on exactly those of fetching once.

Each host batch is acknowledged (with the ids halted since the last acknowledgement) just
before the next one is pulled, so after a dropped connection the host resumes right after
the rows the device already holds.
"""

import numpy as np

from ..errors import EdgekdError
from ..source import Batch


class EpochFeed:
    def __init__(self, source, epoch, plan, kept, cache, batch, on_arrival):
        self.source, self.epoch, self.plan = source, epoch, plan
        self.kept = kept.copy()          # kept at the start of the epoch: read from the cache
        self.cache, self.batch = cache, batch
        self.on_arrival = on_arrival     # Batch -> ids to report halted (the ones it kept)
        self.stream = iter(source.epoch(epoch, plan))
        self.cursor = 0                  # host batches pulled
        self.pending = []                # ids to report halted with the next acknowledgement
        self.parts, self.have = [], 0    # streamed rows pulled but not yet trained

    def steps(self):
        """Yield (ids, x, soft, y, rows) per step, in plan order."""
        for i in range(0, len(self.plan), self.batch):
            ids = self.plan[i:i + self.batch]
            streamed = ~self.kept[ids]
            s = self._take(int(streamed.sum()))
            if s is not None and not np.array_equal(s[0], ids[streamed]):
                raise EdgekdError(f"the host streamed epoch {self.epoch} in another order than "
                                  "the device planned (a host of another edgekd version?)")
            if streamed.all():
                yield s
            elif not streamed.any():
                x, soft, y, rows = self.cache.get(ids)
                yield ids, x, soft, y, rows
            else:
                yield self._merge(ids, streamed, s)

    def halted(self, ids):
        """Ids that settled in a step: reported with the next acknowledgement."""
        if len(ids):
            self.pending.append(ids)

    def close(self, finished=True):
        """Acknowledge the last batch; after a finished epoch, read the host's EPOCH_END."""
        self._ack()
        if finished and next(self.stream, None) is not None:
            raise EdgekdError(f"the host streamed more samples in epoch {self.epoch} than "
                              "the device planned")

    # ----------------------------------------------------------------------------------------
    def _ack(self):
        ids = np.concatenate(self.pending) if self.pending else np.zeros(0, np.int64)
        self.pending = []
        if self.cursor:
            self.source.report(self.epoch, self.cursor, ids, ids[:0])
        elif len(ids):
            raise EdgekdError("halted ids with no host batch to acknowledge")

    def _pull(self):
        self._ack()
        b = next(self.stream, None)
        if b is None:
            raise EdgekdError(f"the host ended epoch {self.epoch} before the samples the "
                              "device planned")
        self.cursor += 1
        self.halted(self.on_arrival(b))
        self.parts.append(b)
        self.have += len(b.ids)

    def _take(self, n):
        """The next n streamed rows as (ids, x, soft, y, rows), pulling host batches as needed."""
        if n == 0:
            return None
        while self.have < n:
            self._pull()
        head = self.parts[0]
        if len(head.ids) == n:     # the usual case: one host batch is one step
            self.parts.pop(0)
            self.have -= n
            return head.ids, head.x, head.soft, head.y, head.rows
        cols = [[] for _ in range(5)]
        need = n
        while need:
            b = self.parts[0]
            k = min(need, len(b.ids))
            for c, a in zip(cols, (b.ids, b.x, b.soft, b.y, b.rows)):
                c.append(a[:k])
            if k == len(b.ids):
                self.parts.pop(0)
            else:
                self.parts[0] = Batch(b.ids[k:], b.x[k:], b.y[k:], b.soft[k:],
                                      None if b.rows is None else b.rows[k:])
            need -= k
        self.have -= n
        return tuple(np.concatenate(c) if c[0] is not None else None for c in cols)

    def _merge(self, ids, streamed, s):
        cx, csoft, cy, crows = self.cache.get(ids[~streamed])
        sx, ssoft, sy, srows = s[1:]
        out = []
        for a, b in ((sx, cx), (ssoft, csoft), (sy, cy), (srows, crows)):
            if a is None:
                out.append(None)
                continue
            m = np.empty((len(ids),) + a.shape[1:], a.dtype)
            m[streamed], m[~streamed] = a, b
            out.append(m)
        return (ids, *out)
