"""Host side of last-layer training on a board: streams training inputs with the teacher's
logits in TRAIN_LAST batches, and halts early per sample with edgekd's SettleTracker: a
sample whose KL to the teacher has settled is not streamed again. The KD loss of the whole
training set is measured (lr 0) before and after, on the board.

Training never leaves the board worse than it found it: a held-out slice of the data (not
streamed for training) is scored on the board before training and after every epoch (test
accuracy by INFER, KD loss by TRAIN_LAST at lr 0); the best layer seen, the one the board
started with included, is the one left on the board (RESET for the deployed layer,
SET_WEIGHTS for a trained one), and the result says which."""

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
    lr: float = 0.01
    lr_decay: float = 0.5      # the rate is multiplied by this after every epoch
    temperature: float = 4.0
    alpha: float = 0.9
    batch: int = 32
    seed: int = 0
    holdout: float = 0.2       # fraction held out to choose the layer kept (0: keep the last)
    halting: HaltingConfig = field(default_factory=HaltingConfig)


def _batch_size(board, dtype_width, want):
    fit = commands.rows_per_frame(
        board, 2 + dtype_width * board.in_features + 4 * board.out_features, 5,
        m.TRAIN_HEAD.size, m.TRAIN_REPLY_HEAD.size)
    return max(1, min(want, fit))


def holdout_split(n, fraction, seed):
    """(held-out ids, training ids) of n samples, both sorted; a pure function of its
    arguments, so a test can recompute it. At least one sample is left to train on."""
    split = np.random.default_rng([seed, 1]).permutation(n)
    n_hold = min(int(round(fraction * n)), max(0, n - 1))
    return np.sort(split[:n_hold]), np.sort(split[n_hold:])


def train_last(client, x, y, teacher_logits, cfg=None, on_epoch=None):
    """Returns loss_before/loss_after (KD loss over the training ids, measured on the board),
    kept ("trained", "epoch N" or "before": the layer left on the board, the best on the
    held-out slice), holdout (its accuracy and KD loss before and for the layer kept),
    epoch_losses (the mean loss of each epoch's streamed batches, before their steps),
    bytes_down (host -> board) and bytes_up (board -> host) of the training epochs,
    bytes_eval of the two measuring passes, bytes_naive_run and bytes_naive_planned (the epochs run, and all planned, without halting),
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
    held, train_ids = holdout_split(len(x), cfg.holdout, cfg.seed)

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

    def score():
        """(accuracy, KD loss) of the board's current layer on the held-out slice."""
        if not len(held):
            return None
        out, _ = commands.infer(client, x[held], board)
        loss, _, _ = stream(held, 0.0)
        return float(np.mean(out.argmax(axis=1) == y[held])), loss

    def better(a, b):
        return a[0] > b[0] or (a[0] == b[0] and a[1] < b[1])

    everything = train_ids
    (before, _, _), eval_down, eval_up = measured(lambda: stream(everything, 0.0))
    (start_score), s_down, s_up = measured(score)
    eval_down, eval_up = eval_down + s_down, eval_up + s_up
    was_trained = board.trained
    start_weights = commands.get_weights(client, board) if was_trained and len(held) else None
    best = {"score": start_score, "epoch": 0, "weights": start_weights}
    tracker = SettleTracker(len(x), cfg.halting)
    halter = EpochHalter(cfg.halting)
    rng = np.random.default_rng(cfg.seed)
    down = up = streamed = epochs_run = 0
    naive_epoch = None
    epoch_losses = []
    stop = "epochs: ran all epochs"
    lr = cfg.lr
    for epoch in range(cfg.epochs):
        order = train_ids[rng.permutation(len(train_ids))]
        order = order[~tracker.settled[order]]
        if len(order) == 0:
            stop = "settled: every sample settled"
            break
        s0, r0 = link.sent, link.received
        total = 0.0
        for i in range(0, len(order), n):
            b = order[i:i + n]
            loss, kl, agree = commands.train_batch(client, board, rows[b], dt, y[b], t[b],
                                                   lr, cfg.temperature, cfg.alpha)
            total += loss * len(b)
            tracker.observe(b, kl, agree)
        epoch_losses.append(total / len(order))
        d, u = link.sent - s0, link.received - r0
        if naive_epoch is None and len(order) == len(train_ids):
            naive_epoch = d + u
        down, up, streamed, epochs_run = down + d, up + u, streamed + len(order), epoch + 1
        lr *= cfg.lr_decay
        settled = float(tracker.settled[train_ids].mean()) if len(train_ids) else 1.0
        now, s_down, s_up = measured(score)
        eval_down, eval_up = eval_down + s_down, eval_up + s_up
        if now is not None and better(now, best["score"]):
            best = {"score": now, "epoch": epoch + 1, "weights": None}
            (best["weights"]), s_down, s_up = measured(lambda: commands.get_weights(client, board))
            eval_down, eval_up = eval_down + s_down, eval_up + s_up
        if on_epoch:
            on_epoch({"epoch": epoch + 1, "loss": epoch_losses[-1], "streamed": len(order),
                      "settled_fraction": settled,
                      "holdout_accuracy": None if now is None else now[0]})
        reason = halter.after_epoch(settled, None)
        if reason:
            stop = reason
            break
    kept = "trained"
    if best["score"] is not None and best["epoch"] != epochs_run:
        def restore():
            if best["epoch"] == 0 and not was_trained:
                commands.reset(client)
            else:
                commands.set_weights(client, *best["weights"], board)
        _, s_down, s_up = measured(restore)
        eval_down, eval_up = eval_down + s_down, eval_up + s_up
        kept = "before" if best["epoch"] == 0 else f"epoch {best['epoch']}"
    (after, _, _), e_down, e_up = measured(lambda: stream(everything, 0.0))
    hold = None if start_score is None else {
        "samples": int(len(held)),
        "accuracy_before": start_score[0], "kd_loss_before": start_score[1],
        "accuracy_after": best["score"][0], "kd_loss_after": best["score"][1]}
    return {"board": board.name, "loss_before": before, "loss_after": after,
            "kept": kept, "holdout": hold,
            "bytes_down": down, "bytes_up": up, "bytes_eval": eval_down + eval_up + e_down + e_up,
            "bytes_naive_run": (naive_epoch or 0) * epochs_run,
            "bytes_naive_planned": (naive_epoch or 0) * cfg.epochs, "epochs_run": epochs_run,
            "samples_streamed": streamed, "samples_naive": len(train_ids) * cfg.epochs,
            "settled_fraction": float(tracker.settled[train_ids].mean()) if len(train_ids) else 1.0,
            "stop_reason": stop, "epoch_losses": epoch_losses, "batch": n, "resends": client.resends,
            "wall_s": round(time.perf_counter() - t0, 3)}
