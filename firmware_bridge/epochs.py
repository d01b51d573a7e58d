"""The epoch loop both board trainings run (the whole student, board_train.py, and the last
layer, train_last.py): each epoch visits the unsettled samples in edgekd's epoch order,
streams them in batches, counts the link bytes of the epoch, and asks edgekd's EpochHalter
whether to stop (rho, a validation plateau, or a byte or time budget)."""

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class EpochTotals:
    bytes_down: int = 0
    bytes_up: int = 0
    streamed: int = 0
    epochs_run: int = 0
    stop_reason: str = ""
    epoch_losses: list = field(default_factory=list)
    first_full_epoch_bytes: int | None = None


def run_epochs(link, epochs, order_of, run_batches, after_epoch, halter, train_ids):
    """Runs up to `epochs` epochs. `order_of(epoch)` gives the ids to visit (settled ones
    left out), `run_batches(epoch, order)` streams them and returns the epoch's mean loss
    (it may return None to say a budget ran out), `after_epoch(epoch, order, loss)` returns
    (settled fraction, validation value or None). Returns EpochTotals."""
    tot = EpochTotals(stop_reason=f"epochs: ran all {epochs} epochs")
    start = time.perf_counter()
    for epoch in range(epochs):
        order = order_of(epoch)
        if len(order) == 0:
            tot.stop_reason = "settled: every sample settled"
            break
        s0, r0 = link.sent, link.received
        loss = run_batches(epoch, order)
        d, u = link.sent - s0, link.received - r0
        if tot.first_full_epoch_bytes is None and len(order) == len(train_ids):
            tot.first_full_epoch_bytes = d + u
        tot.bytes_down += d
        tot.bytes_up += u
        tot.streamed += len(order)
        tot.epochs_run = epoch + 1
        if loss is None:
            tot.stop_reason = halter.budget(tot.bytes_down + tot.bytes_up,
                                            time.perf_counter() - start) or "budget"
            break
        tot.epoch_losses.append(float(loss))
        settled, val = after_epoch(epoch, order, loss)
        reason = halter.after_epoch(settled, val)
        if reason:
            tot.stop_reason = reason
            break
    return tot


def batches(ids, size):
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def settled_fraction(settled, train_ids):
    return float(np.mean(settled[train_ids])) if len(train_ids) else 1.0
