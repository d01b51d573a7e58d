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

from . import commands, epochs
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


class _LastLayerRun:
    """One train-last run's parts: streaming batches, measuring, scoring the held-out slice,
    keeping the best layer. The epochs themselves are epochs.run_epochs, shared with the
    whole-student training."""

    def __init__(self, client, x, y, teacher_logits, cfg):
        self.client, self.link, self.cfg = client, client.link, cfg
        self.board = board = commands.info(client)
        commands.require_model(board)
        if board.head_in == 0:
            raise EdgekdError(f"the model on board {board.name} has no dense last layer to train")
        self.t = np.asarray(teacher_logits, np.float32)
        if self.t.shape != (len(x), board.out_features):
            raise EdgekdError(f"teacher logits have shape {self.t.shape}; the board's model "
                              f"outputs {board.out_features} classes for {len(x)} samples")
        self.y = y = np.asarray(y)
        if len(y) != len(x) or (len(y) and (y.min() < 0 or y.max() >= board.out_features)):
            raise EdgekdError("labels do not match the inputs or the model's classes")
        self.x = x
        self.dt, self.rows = commands.encode_inputs(board, x)
        self.n = _batch_size(board, self.rows.itemsize, cfg.batch)
        self.held, self.train_ids = holdout_split(len(x), cfg.holdout, cfg.seed)
        self.eval_bytes = 0

    def batch(self, ids, lr):
        return commands.train_batch(self.client, self.board, self.rows[ids], self.dt,
                                    self.y[ids], self.t[ids], lr, self.cfg.temperature,
                                    self.cfg.alpha)

    def stream(self, ids, lr):
        """(mean loss before each batch's step, KL per batch, agreement per batch)."""
        losses, kls, agrees = [], [], []
        for b in epochs.batches(ids, self.n):
            loss, kl, agree = self.batch(b, lr)
            losses.append(loss * len(b))
            kls.append(kl)
            agrees.append(agree)
        return float(np.sum(losses) / max(1, len(ids))), kls, agrees

    def measured(self, fn, *args):
        """fn(*args), its line bytes counted as evaluation."""
        s0, r0 = self.link.sent, self.link.received
        out = fn(*args)
        self.eval_bytes += self.link.sent - s0 + self.link.received - r0
        return out

    def kd_loss(self, ids):
        return self.measured(self.stream, ids, 0.0)[0]

    def score(self):
        """(accuracy, KD loss) of the board's current layer on the held-out slice."""
        if not len(self.held):
            return None
        out, _ = self.measured(commands.infer, self.client, self.x[self.held], self.board)
        return float(np.mean(out.argmax(axis=1) == self.y[self.held])), self.kd_loss(self.held)

    def starting_layer(self):
        """The layer the board starts with, as the first candidate to keep: its held-out
        score, and its weights read back when it was trained before (a deployed layer comes
        back by RESET, so it needs no copy)."""
        weights = None
        score = self.score()
        if self.board.trained and len(self.held):
            weights = self.measured(commands.get_weights, self.client, self.board)
        return {"score": score, "epoch": 0, "weights": weights}

    def keep_best(self, best, epochs_run):
        """Leave the best layer seen on the board; returns which one that is ("trained":
        the last epoch's, already there)."""
        if best["score"] is None or best["epoch"] == epochs_run:
            return "trained"
        if best["epoch"] == 0 and not self.board.trained:
            self.measured(commands.reset, self.client)
        else:
            self.measured(commands.set_weights, self.client, *best["weights"], self.board)
        return "before" if best["epoch"] == 0 else f"epoch {best['epoch']}"


class _Epochs:
    """What epochs.run_epochs asks of a train-last run: each epoch's order (a seeded shuffle
    of the training ids less those settled), its batches streamed at a rate that decays
    epoch by epoch, and after each epoch the held-out score that decides the layer kept."""

    def __init__(self, run, best, on_epoch):
        self.run, self.best, self.on_epoch = run, best, on_epoch
        self.tracker = SettleTracker(len(run.x), run.cfg.halting)
        self.rng = np.random.default_rng(run.cfg.seed)
        self.lr = run.cfg.lr

    def order_of(self, epoch):
        ids = self.run.train_ids
        order = ids[self.rng.permutation(len(ids))]
        return order[~self.tracker.settled[order]]

    def run_batches(self, epoch, order):
        total = 0.0
        for b in epochs.batches(order, self.run.n):
            loss, kl, agree = self.run.batch(b, self.lr)
            total += loss * len(b)
            self.tracker.observe(b, kl, agree)
        return total / len(order)

    def after_epoch(self, epoch, order, loss):
        run = self.run
        self.lr *= run.cfg.lr_decay
        settled = epochs.settled_fraction(self.tracker.settled, run.train_ids)
        now = run.score()
        if now is not None and _better(now, self.best["score"]):
            self.best.update(score=now, epoch=epoch + 1,
                             weights=run.measured(commands.get_weights, run.client, run.board))
        if self.on_epoch:
            self.on_epoch({"epoch": epoch + 1, "loss": loss, "streamed": len(order),
                           "settled_fraction": settled,
                           "holdout_accuracy": None if now is None else now[0]})
        return settled, None


def _better(a, b):
    return a[0] > b[0] or (a[0] == b[0] and a[1] < b[1])


def train_last(client, x, y, teacher_logits, cfg=None, on_epoch=None):
    """Returns loss_before/loss_after (KD loss over the training ids, measured on the board),
    kept ("trained", "epoch N" or "before": the layer left on the board, the best on the
    held-out slice), holdout (its accuracy and KD loss before and for the layer kept),
    epoch_losses (the mean loss of each epoch's streamed batches, before their steps),
    bytes_down (host -> board) and bytes_up (board -> host) of the training epochs,
    bytes_eval of the measuring passes, bytes_naive_run and bytes_naive_planned (the epochs
    run, and all planned, without halting), epochs_run, samples_streamed, settled_fraction,
    stop_reason."""
    cfg = cfg or TrainLastConfig()
    t0 = time.perf_counter()
    run = _LastLayerRun(client, x, y, teacher_logits, cfg)
    train_ids = run.train_ids
    before = run.kd_loss(train_ids)
    best = run.starting_layer()
    start_score = best["score"]
    steps = _Epochs(run, best, on_epoch)
    tot = epochs.run_epochs(client.link, cfg.epochs, steps.order_of, steps.run_batches,
                            steps.after_epoch, EpochHalter(cfg.halting), train_ids)
    kept = run.keep_best(best, tot.epochs_run)
    after = run.kd_loss(train_ids)
    hold = None if start_score is None else {
        "samples": int(len(run.held)),
        "accuracy_before": start_score[0], "kd_loss_before": start_score[1],
        "accuracy_after": best["score"][0], "kd_loss_after": best["score"][1]}
    naive_epoch = tot.first_full_epoch_bytes or 0
    return {"board": run.board.name, "loss_before": before, "loss_after": after,
            "kept": kept, "holdout": hold,
            "bytes_down": tot.bytes_down, "bytes_up": tot.bytes_up, "bytes_eval": run.eval_bytes,
            "bytes_naive_run": naive_epoch * tot.epochs_run,
            "bytes_naive_planned": naive_epoch * cfg.epochs, "epochs_run": tot.epochs_run,
            "samples_streamed": tot.streamed, "samples_naive": len(train_ids) * cfg.epochs,
            "settled_fraction": epochs.settled_fraction(steps.tracker.settled, train_ids),
            "stop_reason": tot.stop_reason, "epoch_losses": tot.epoch_losses, "batch": run.n,
            "resends": client.resends, "wall_s": round(time.perf_counter() - t0, 3)}
