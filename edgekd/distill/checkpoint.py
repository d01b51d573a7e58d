"""A run's checkpoint as one value: read once, it is everything a resumed run starts from
(settings, weights, optimizer, halting and best-weights state, counters)."""

import os
from dataclasses import dataclass

import numpy as np

from ..errors import EdgekdError
from ..nn.io import load_model
from .config import CHECKPOINT, TrainConfig

# the training-config keys where checkpoints written before the link settings had their own
# entry kept the codecs; such a checkpoint's link settings are read from there
_OLD_LINK_KEYS = ("codec", "x_codec", "topk")


@dataclass(frozen=True)
class Checkpoint:
    path: str
    cfg: TrainConfig        # the run's training settings: they win over the caller's
    link: dict              # the source's settings() when the run started (its codecs)
    spec: dict
    epoch: int              # epochs completed
    stop: str | None
    totals: dict            # bytes, seconds and samples so far
    halter: dict
    best: dict
    dropout_rng: dict
    arrays: dict            # weights, optimizer, settle tracker, kept samples, best weights

    @property
    def halted_ids(self):
        """The samples the host no longer sends (settled, or kept by the device): the HELLO
        of the resumed run tells the host these."""
        halted = self.arrays["halt.settled"].copy()
        if "cache.slot" in self.arrays:
            halted |= self.arrays["cache.slot"] >= 0
        return np.flatnonzero(halted)

    @property
    def num_train(self):
        return len(self.arrays["halt.settled"])


def load_checkpoint(out):
    """The checkpoint of the run in directory `out`, or a one-line EdgekdError."""
    path = os.path.join(out, CHECKPOINT)
    if not os.path.exists(path):
        raise EdgekdError(f"{out}: nothing to resume (no {CHECKPOINT})")
    saved, meta, arrays = load_model(path, extra=True)
    try:
        state = meta["trainer"]
        config = state["config"]
        link = state.get("link") or {k: config[k] for k in _OLD_LINK_KEYS if k in config}
        return Checkpoint(path, TrainConfig.from_dict(config).check(), dict(link), saved.spec,
                          state["epoch"], state["stop"], state["totals"], state["halter"],
                          state["best"], state["dropout_rng"], arrays)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise EdgekdError(f"{path}: not an edgekd checkpoint ({e})") from None

