"""Host side of last-layer training on a board: streams training inputs with the teacher's
logits in TRAIN_LAST batches, and halts early per sample with edgekd's SettleTracker: a
sample whose KL to the teacher has settled is not streamed again. The KD loss of the whole
training set is measured (lr 0) before and after, on the board."""

import time
from dataclasses import dataclass, field

import numpy as np

from edgekd.distill.halting import EpochHalter, HaltingConfig, SettleTracker
from edgekd.errors import EdgekdError

from . import commands
from . import messages as m


@dataclass
class TrainLastConfig:
    epochs: int = 5
    lr: float = 0.05
    temperature: float = 4.0
    alpha: float = 0.9
    batch: int = 32
    seed: int = 0
    halting: HaltingConfig = field(default_factory=HaltingConfig)


def _batch_size(board, dtype_width, want):
    fit = commands.rows_per_frame(
        board, 2 + dtype_width * board.in_features + 4 * board.out_features, 5,
        m.TRAIN_HEAD.size, m.TRAIN_REPLY_HEAD.size)
    return max(1, min(want, fit))


def train_last(client, x, y, teacher_logits, cfg=None, on_epoch=None):
    """Returns loss_before/loss_after (KD loss over all of x, measured on the board),
    epoch_losses (the mean loss of each epoch's streamed batches, before their steps),
    bytes_down (host -> board) and bytes_up (board -> host) of the training epochs,
    bytes_eval of the two measuring passes, bytes_naive (the epochs without halting),
    epochs_run, samples_streamed, settled_fraction, stop_reason."""
    cfg = cfg or TrainLastConfig()
    link = client.link
    t0 = time.perf_counter()
    board = commands.info(client)
    commands.require_model(board)
    if board.head_in == 0:
        raise EdgekdError(f"the model on board {board.name} has no dense last layer to train")
    t = np.asarray(teacher_logits, np.float32)
    if t.shape != (len(x), board.out_features):
        raise EdgekdError(f"teacher logits have shape {t.shape}; the board's model outputs "
                          f"{board.out_features} classes for {len(x)} samples")
    y = np.asarray(y)
    if len(y) != len(x) or (len(y) and (y.min() < 0 or y.max() >= board.out_features)):
        raise EdgekdError("labels do not match the inputs or the model's classes")
    dt, rows = commands.encode_inputs(board, x)
    n = _batch_size(board, rows.itemsize, cfg.batch)

    def stream(ids, lr):
        losses, kls, agrees = [], [], []
        for i in range(0, len(ids), n):
            b = ids[i:i + n]
            loss, kl, agree = commands.train_batch(client, board, rows[b], dt, y[b], t[b], lr,
                                                   cfg.temperature, cfg.alpha)
            losses.append(loss * len(b))
            kls.append(kl)
            agrees.append(agree)
        return float(np.sum(losses) / max(1, len(ids))), kls, agrees

    def measured(fn):
        s0, r0 = link.sent, link.received
        out = fn()
        return out, link.sent - s0, link.received - r0

    everything = np.arange(len(x))
    (before, _, _), eval_down, eval_up = measured(lambda: stream(everything, 0.0))
    tracker = SettleTracker(len(x), cfg.halting)
    halter = EpochHalter(cfg.halting)
    rng = np.random.default_rng(cfg.seed)
    down = up = streamed = epochs_run = 0
    naive_epoch = None
    epoch_losses = []
    stop = "epochs: ran all epochs"
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(x))
        order = order[~tracker.settled[order]]
        if len(order) == 0:
            stop = "settled: every sample settled"
            break
        s0, r0 = link.sent, link.received
        total = 0.0
        for i in range(0, len(order), n):
            b = order[i:i + n]
            loss, kl, agree = commands.train_batch(client, board, rows[b], dt, y[b], t[b],
                                                   cfg.lr, cfg.temperature, cfg.alpha)
            total += loss * len(b)
            tracker.observe(b, kl, agree)
        epoch_losses.append(total / len(order))
        d, u = link.sent - s0, link.received - r0
        if naive_epoch is None and len(order) == len(x):
            naive_epoch = d + u
        down, up, streamed, epochs_run = down + d, up + u, streamed + len(order), epoch + 1
        settled = float(tracker.settled.mean()) if len(x) else 1.0
        if on_epoch:
            on_epoch({"epoch": epoch + 1, "loss": epoch_losses[-1], "streamed": len(order),
                      "settled_fraction": settled})
        reason = halter.after_epoch(settled, None)
        if reason:
            stop = reason
            break
    (after, _, _), e_down, e_up = measured(lambda: stream(everything, 0.0))
    return {"board": board.name, "loss_before": before, "loss_after": after,
            "bytes_down": down, "bytes_up": up, "bytes_eval": eval_down + eval_up + e_down + e_up,
            "bytes_naive": (naive_epoch or 0) * cfg.epochs, "epochs_run": epochs_run,
            "samples_streamed": streamed, "samples_naive": len(x) * cfg.epochs,
            "settled_fraction": float(tracker.settled.mean()) if len(x) else 1.0,
            "stop_reason": stop, "epoch_losses": epoch_losses, "batch": n, "resends": client.resends,
            "wall_s": round(time.perf_counter() - t0, 3)}
