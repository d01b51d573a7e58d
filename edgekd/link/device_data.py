"""Device-data mode: the device owns the inputs (its own sensor logs). It uploads inputs to
the host for soft labels, keeps the answers (as they arrived, still encoded) within a byte
budget, and never asks again for a cached or a halted sample. Test accuracy costs no link
bytes: the test split is local."""

import numpy as np

from ..errors import EdgekdError
from ..source import Batch, HaltedSet, Welcome
from . import messages as m
from .client import LinkSource, naive_bytes
from .codecs import affine8_params, x_codec
from .frames import ProtocolError
from ..order import epoch_order, split_validation


class DeviceDataSource(LinkSource):
    resumable = False  # the order and the halted set live on the device
    mode = "device-data"

    def __init__(self, dial, data, cache_budget=1 << 20, **link):
        super().__init__(dial, **link)
        self.data = data
        self.cache_budget = cache_budget
        self.cache, self.cache_bytes = {}, 0
        self.queried = 0

    def open(self, hello):
        d = self.data
        if tuple(hello.input_shape) != tuple(d.input_shape):
            raise EdgekdError(f"the student expects input shape {list(hello.input_shape)}, but "
                              f"the device's data set {d.name} has {list(d.input_shape)}")
        self.hello = hello
        self.affine = affine8_params(d.x_train) if self.x_codec == "u8" else None
        # as in host-data mode, a host not up yet or busy, or a damaged handshake, costs a
        # strike, not the run
        self._connect_retrying("first connection")
        n = len(d.y_train)
        self.train_ids, self.val_ids = split_validation(n, hello.val_fraction, hello.seed)
        self.halted = HaltedSet(n, hello.halted)
        return Welcome(n, len(self.val_ids), len(d.y_test), int(np.prod(d.input_shape)))

    def upload_affine(self):
        return self.affine

    def input_codec(self, features, tail):
        """Uploads use the device's own u8 parameters (sent in HELLO)."""
        return x_codec(self.x_codec, features, self.affine)

    # -- soft labels: cache, else ask -------------------------------------------------------
    def soft_labels(self, ids):
        missing = np.array([i for i in ids if i not in self.cache], np.int64)
        fresh = self._query(missing) if len(missing) else {}
        rows = []
        for i in ids:
            if i in self.cache:
                rows.append(self.sc.decode(self.cache[i], 1)[0])
            else:
                rows.append(self.sc.decode(fresh[i], 1)[0])
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.hello.num_classes), np.float32)

    def _query(self, ids):
        """Upload x of `ids` (at most a batch per QUERY, the size the host agreed to), get
        their encoded soft labels; cache what the budget allows."""
        b = self.hello.batch
        answer = b"".join(self._retrying(lambda part=ids[i:i + b]: self._query_once(part))
                          for i in range(0, len(ids), b))
        row = self.sc.nbytes(1)
        out = {}
        for j, i in enumerate(ids):
            enc = answer[j * row:(j + 1) * row]
            out[int(i)] = enc
            if self.cache_bytes + row <= self.cache_budget:
                self.cache[int(i)] = enc
                self.cache_bytes += row
        self.queried += len(ids)
        return out

    def _query_once(self, ids):
        x = self.data.x_train[ids]
        self._send(m.frame(m.T.QUERY, m.pack_ids(ids, self.xc.encode(x))))
        ftype, _, payload = self._recv()
        if ftype != m.T.SOFT:
            raise ProtocolError(f"expected SOFT, got frame type {ftype}")
        got, rest = m.unpack_ids(payload, "SOFT", self.sc.nbytes)
        if not np.array_equal(got, ids):
            raise ProtocolError("SOFT answers other ids than asked")
        if not np.all(np.isfinite(self.sc.decode(rest, len(ids)))):
            raise ProtocolError("SOFT labels hold NaN or inf")
        self._count()
        self._progressed()
        return rest

    # -- the source interface ---------------------------------------------------------------
    def epoch(self, epoch, plan=None):
        order = epoch_order(self.train_ids, self.hello.seed, epoch, self.halted.mask) \
            if plan is None else plan
        b = self.hello.batch
        for start in range(0, len(order), b):
            ids = order[start:start + b]
            yield Batch(ids, self.data.x_train[ids], self.data.y_train[ids], self.soft_labels(ids))

    def holds(self):
        """The samples whose soft labels this source keeps: replaying them asks nothing."""
        mask = np.zeros(len(self.halted), bool)
        mask[np.fromiter(self.cache, np.int64, len(self.cache))] = True
        return mask

    def row_codec(self):
        """The device owns its inputs and caches soft labels itself (within the same budget)."""
        return None

    def report(self, epoch, cursor, halted, woken):
        """Halting is local here: a halted sample is simply never asked about again."""
        self.halted.update(halted, woken)

    def validation(self):
        ids = self.val_ids
        return Batch(ids, self.data.x_train[ids], self.data.y_train[ids], self.soft_labels(ids))

    def test(self):
        d = self.data
        return Batch(np.arange(len(d.y_test)), d.x_test, d.y_test, None)

    def naive_bytes(self, epochs, num_train, batch):
        return naive_bytes(epochs, num_train, batch, self.xc.width, self.hello.num_classes)
