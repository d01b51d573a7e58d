"""The soft-label source: what the trainer reads batches from and reports halting to.

The trainer sees only this interface. The in-process link (host and device in one process)
and the TCP client both implement it, so the trainer does not change with the transport.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Batch:
    ids: np.ndarray            # int64 [B], ids in the training split
    x: np.ndarray              # float32 [B, *input_shape]
    y: np.ndarray              # int64 [B]
    soft: np.ndarray | None    # float32 [B, classes], teacher logits as they arrived


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


class SoftLabelSource:
    """bytes_down / bytes_up count training traffic; bytes_eval counts the test split (frame
    bytes, comparable across links); bytes_wire is what the socket carried, TLS included."""
    bytes_down = bytes_up = bytes_eval = bytes_wire = 0

    def open(self, hello):
        """Handshake; returns a Welcome. On resume, `hello.halted` restores the halted set."""
        raise NotImplementedError

    def epoch(self, epoch):
        """Yield the epoch's batches, in the order fixed by (seed, epoch, halted set)."""
        raise NotImplementedError

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
