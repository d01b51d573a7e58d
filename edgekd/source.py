"""The soft-label source: what the trainer reads batches from and reports halting to.

The trainer (edgekd.distill) sees only this interface; the link (edgekd.link: in-process,
TCP, device-data, fetch-once) implements it. Both import it from here and never each other,
so the trainer does not change with the transport.
"""

from dataclasses import dataclass, field

import numpy as np

from .errors import EdgekdError


@dataclass
class Batch:
    ids: np.ndarray            # int64 [B], ids in the training split
    x: np.ndarray              # float32 [B, *input_shape]
    y: np.ndarray              # int64 [B]
    soft: np.ndarray | None    # float32 [B, classes], teacher logits as they arrived
    rows: np.ndarray | None = None  # uint8 [B, row bytes]: x and soft still encoded (row_codec)


@dataclass
class Hello:
    """What the device asks for when it connects."""
    seed: int
    batch: int
    val_fraction: float
    input_shape: tuple
    num_classes: int
    halted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # on resume
    num_train: int | None = None    # on resume: the size of the split the halted ids index


@dataclass
class Welcome:
    """What the host answers: the split sizes the device will see."""
    num_train: int          # ids 0..num_train-1, validation ids included
    num_val: int
    num_test: int
    features: int           # values per sample


class HaltedSet:
    """The training samples nobody streams any more, over ids 0..n-1 of the training split.
    The host session and every device-side source keep theirs in one of these; HALT adds
    ids, WAKE removes them, and the epoch order reads `mask`."""

    def __init__(self, n, ids=()):
        self.mask = np.zeros(n, bool)
        self.halt(ids)

    def __len__(self):
        return len(self.mask)

    def halt(self, ids):
        self.mask[self._checked(ids)] = True

    def wake(self, ids):
        self.mask[self._checked(ids)] = False

    def update(self, halted, woken):
        """One report: newly settled ids halt, drifted ones wake."""
        self.halt(halted)
        self.wake(woken)

    def assign(self, mask):
        self.mask[...] = mask

    def copy(self):
        other = HaltedSet(0)
        other.mask = self.mask.copy()
        return other

    def ids(self):
        return np.flatnonzero(self.mask)

    def _checked(self, ids):
        ids = np.asarray(ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.mask)):
            raise EdgekdError(f"sample id out of range 0..{len(self.mask) - 1}")
        return ids


class SoftLabelSource:
    """bytes_down / bytes_up count training traffic; bytes_eval counts the test split (frame
    bytes, comparable across links); bytes_wire is what the socket carried, TLS included."""
    bytes_down = bytes_up = bytes_eval = bytes_wire = 0
    halted = None     # link sources: a HaltedSet once open() has returned

    def open(self, hello):
        """Handshake; returns a Welcome. On resume, `hello.halted` restores the halted set."""
        raise NotImplementedError

    def settings(self):
        """What a resumed run must ask for again (its codecs), as a JSON-ready dict that the
        trainer keeps in its checkpoint without reading it."""
        return {}

    def epoch(self, epoch, plan=None):
        """Yield the epoch's batches, in the order fixed by (seed, epoch, halted set).
        `plan` is the trainer's: the ids it trains this epoch, in order, settled samples it
        replays included. Sources that serve from the device's own memory (device-data,
        fetch-once's later epochs) yield exactly it; the host-data link ignores it (the host
        streams its own order, which the trainer checks against its plan)."""
        raise NotImplementedError

    def holds(self):
        """Mask of training ids this source can serve again with no link bytes (None: none),
        so the trainer can replay settled samples the device holds outside its own cache."""
        return None

    def row_codec(self):
        """Sources whose batches carry `rows` (samples as the link encoded them) return the
        codec that decodes them (nbytes per row, decode(rows) -> (x, soft)), so the device can
        keep samples in the bytes they arrived in. None: nothing to keep (the device owns
        the data, or already keeps all of it)."""
        return None

    def report(self, epoch, cursor, halted, woken):
        """After each batch: ACK the cursor, HALT newly settled ids, WAKE drifted ones."""
        raise NotImplementedError

    def validation(self):
        """The held-out slice with soft labels (a Batch), fetched once."""
        raise NotImplementedError

    def test(self):
        """The test split as a Batch (soft labels not needed), fetched once."""
        raise NotImplementedError

    def stop(self, reason):
        raise NotImplementedError

    def naive_bytes(self, epochs, num_train, batch):
        """Bytes that streaming every sample every epoch as float32 would cost."""
        raise NotImplementedError

    def close(self):
        pass
