"""Host side of training the whole float32 student on a board by KD with early halting
decided on the board (docs/protocol.md, section 11.8). The host sets the student up
(refusing one that does not fit before sending it), writes its initial weights, and streams
(id, label, x, teacher logits) in TRAIN_STEP frames in edgekd's epoch order
(edgekd.order); the board runs forward, KD loss, backward and the optimizer step, applies
the device trainer's settling rule and answers with the ids that settled, which the host then
leaves out of later epochs. Epochs stop by edgekd's EpochHalter: at rho, or when the mean KL
on a held-out validation slice (edgekd's split_validation), measured on the board, stops
improving; the best epoch's weights are put back, as `edgekd train` does."""

import time

import numpy as np

from edgekd.distill.halting import EpochHalter
from edgekd.design.board_memory import FRAME_OVERHEAD
from edgekd.errors import EdgekdError
from edgekd.link.codecs import affine8_params
from edgekd.order import epoch_order, split_validation
from edgekd.link.settings import LinkConfig

from . import commands, epochs
from . import messages as m
from . import student


def encode_x(x, x_codec):
    """(dtype code, rows as sent, lo, step, rows as the board sees them in float32)."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    if x_codec == "f32":
        return m.X_F32, x, 0.0, 1.0, x
    if x_codec != "u8":
        raise EdgekdError(f"a board takes inputs as f32 or u8, not {x_codec}")
    lo, step = affine8_params(x.reshape(-1, 1))
    lo, step = np.float32(lo[0]), np.float32(step[0])
    q = quantize_u8(x, lo, step)
    return m.X_U8, q, float(lo), float(step), decode_u8(q, lo, step)


def quantize_u8(x, lo, step):
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    return np.clip(np.round((x - np.float32(lo)) / np.float32(step)), 0, 255).astype(np.uint8)


def decode_u8(q, lo, step):
    """What the board computes from u8 inputs: lo + q * step in float32."""
    return (np.float32(lo) + q.astype(np.float32) * np.float32(step)).astype(np.float32)


def naive_bytes(epochs_n, num_train, batch, inputs, classes, rows_f32):
    """The line bytes of streaming every training sample every epoch as float32, with no
    halting: TRAIN_STEP frames of at most rows_f32 samples and their replies, each COBS
    encoded at its minimum (one code byte) plus the delimiter."""
    def line(payload):
        return FRAME_OVERHEAD + payload + 2

    def batch_bytes(n):
        total = 0
        for i in range(0, n, rows_f32):
            k = min(rows_f32, n - i)
            total += line(m.SEQ.size + m.step_request_size(k, inputs, m.X_F32, classes))
            total += line(m.SEQ.size + m.STEP_REPLY.size)
        return total
    full, rest = divmod(num_train, batch)
    return epochs_n * (full * batch_bytes(batch) + (batch_bytes(rest) if rest else 0))


class BoardTrainer:
    def __init__(self, client, spec, init_params, cfg, x_codec=LinkConfig.x_codec):
        self.client, self.link = client, client.link
        self.spec, self.cfg, self.x_codec = spec, cfg.check(), x_codec
        self.init = np.asarray(init_params, np.float32)
        self.classes = spec["num_classes"]
        self.instructions = 0
        self.counted = False
        self.trained_samples = 0
        self.eval_down = self.eval_up = 0

    def measured(self, fn, *args):
        s0, r0 = self.link.sent, self.link.received
        out = fn(*args)
        self.eval_down += self.link.sent - s0
        self.eval_up += self.link.received - r0
        return out

    def frames(self, ids, flags_measure, lr, batch_len):
        """TRAIN_STEP frames for one batch of ids; returns the summed StepResults."""
        out = {"loss": 0.0, "kl": 0.0, "agree": 0, "correct": 0, "settled": []}
        rows = self.setup.rows
        for i in range(0, len(ids), rows):
            part = ids[i:i + rows]
            flags = m.STEP_MEASURE if flags_measure else (
                (m.STEP_BEGIN if i == 0 else 0) | (m.STEP_END if i + rows >= len(ids) else 0))
            r = student.step(self.client, m.StepFrame(
                flags, self.setup.x_dtype, batch_len, lr, part, self.y[part], self.xq[part],
                self.t[part]))
            out["loss"] += r.loss_sum
            out["kl"] += r.kl_sum
            out["agree"] += r.agree
            out["correct"] += r.correct
            out["settled"].append(r.settled)
            if not flags_measure:
                self.trained_samples += len(part)
                self.instructions += r.instructions
                self.counted = r.counted
        return out

    def measure(self, ids):
        """(mean KD loss, mean KL) of the student on ids, measured on the board (no step)."""
        if not len(ids):
            return None, None
        loss = kl = 0.0
        for b in epochs.batches(ids, self.setup.rows):
            r = self.frames(b, True, 0.0, len(b))
            loss, kl = loss + r["loss"], kl + r["kl"]
        return loss / len(ids), kl / len(ids)

    def run(self, x, y, teacher, x_test, y_test, on_epoch=None):
        """Sets the student up on the board, trains it epoch by epoch until the halter
        stops, puts the best epoch's weights back, and returns the run's figures: losses
        before and after, test accuracy, line bytes by purpose and against naive streaming,
        epochs, settling, memory predicted and allocated."""
        cfg, client = self.cfg, self.client
        t0 = time.perf_counter()
        board = commands.info(client)
        predicted, allocated = self.set_up(board, x, y, teacher)
        setup_bytes = self.link.sent + self.link.received
        train_ids, val_ids = split_validation(len(self.y), cfg.val_fraction, cfg.seed)
        halter = EpochHalter(cfg.halting, "validation kl", lower_is_better=True)
        loss_before = self.measured(self.measure, train_ids)[0]
        steps = _StudentEpochs(self, board, train_ids, val_ids, halter, setup_bytes, on_epoch)
        tot = epochs.run_epochs(self.link, cfg.epochs, steps.order_of, steps.run_batches,
                                steps.after_epoch, halter, train_ids)
        weights_from = self.keep_best(board, steps.best, tot.epochs_run)
        loss_after = self.measured(self.measure, train_ids)[0]
        test_accuracy = self.test_accuracy(x_test, y_test)
        inputs, rows = self.xq.shape[1], self.setup.rows
        rows_f32 = student.rows_per_frame(board, inputs, m.X_F32, self.classes)
        naive_run = naive_bytes(tot.epochs_run, len(train_ids), cfg.batch, inputs,
                                self.classes, rows_f32)
        link = tot.bytes_down + tot.bytes_up
        return {
            "board": board.name, "samples": int(len(train_ids)), "validation": int(len(val_ids)),
            "test_accuracy": test_accuracy,
            "loss_before": loss_before, "loss_after": loss_after,
            "bytes_down": tot.bytes_down, "bytes_up": tot.bytes_up,
            "bytes_eval": self.eval_down + self.eval_up, "bytes_setup": setup_bytes,
            "bytes_naive": naive_run,          # the name `board train` has always reported,
            "bytes_naive_run": naive_run,      # and the one the rest of edgekd uses for it
            "bytes_naive_planned": naive_bytes(cfg.epochs, len(train_ids), cfg.batch, inputs,
                                               self.classes, rows_f32),
            "link_fraction_of_naive": link / naive_run if naive_run else None,
            "settled_fraction": epochs.settled_fraction(steps.settled, train_ids),
            "epochs_run": tot.epochs_run, "stop_reason": tot.stop_reason,
            "weights_from_epoch": weights_from, "epoch_losses": tot.epoch_losses,
            "samples_streamed": tot.streamed, "rows_per_frame": rows, "x_codec": self.x_codec,
            "optimizer": cfg.optimizer, "batch": cfg.batch,
            "instructions_per_sample": (self.instructions / self.trained_samples
                                        if self.counted and self.trained_samples else None),
            "memory": {"predicted": predicted.to_dict(),
                       "board": {k: v for k, v in allocated.items()}},
            "resends": client.resends, "wall_s": round(time.perf_counter() - t0, 3)}

    def set_up(self, board, x, y, teacher):
        """Check the data against the student, encode the inputs as they will be sent, and
        configure the student on the board (refused before anything is sent if it does not
        fit) with its initial weights; returns (predicted, allocated) memory."""
        self.t = np.ascontiguousarray(teacher, np.float32)
        self.y = np.asarray(y, np.int64)
        n = len(self.y)
        if self.t.shape != (n, self.classes) or len(x) != n:
            raise EdgekdError(f"teacher logits {self.t.shape} and {len(x)} inputs do not match "
                              f"{n} labels of {self.classes} classes")
        dt, self.xq, lo, step, _ = encode_x(x, self.x_codec)
        self.x_code = dt, lo, step
        inputs = self.xq.shape[1]
        rows = min(self.cfg.batch, student.rows_per_frame(board, inputs, dt, self.classes))
        self.setup = student.setup_for(self.spec, self.cfg, rows, n, dt, lo, step)
        if self.setup.inputs != inputs:
            raise EdgekdError(f"the data has {inputs} features; the student takes "
                              f"{self.setup.inputs}")
        predicted, allocated = student.configure(self.client, board, self.setup)
        student.set_params(self.client, board, self.init)
        return predicted, allocated

    def keep_best(self, board, best, epochs_run):
        """Put the best epoch's weights back unless the last epoch was the best; returns
        the epoch the board's weights now come from."""
        if best["params"] is None or best["epoch"] == epochs_run:
            return epochs_run
        self.measured(student.set_params, self.client, board, best["params"])
        return best["epoch"]

    def test_accuracy(self, x_test, y_test):
        """Accuracy of the board's student on the test set, its inputs encoded as the
        training inputs were (None without test samples)."""
        dt, lo, step = self.x_code
        xt = (np.asarray(x_test, np.float32).reshape(len(x_test), -1) if dt == m.X_F32
              else quantize_u8(x_test, lo, step))
        test_logits = self.measured(student.logits, self.client, self.setup, xt, self.classes)
        yt = np.asarray(y_test)
        return float(np.mean(test_logits.argmax(axis=1) == yt)) if len(yt) else None


class _StudentEpochs:
    """What epochs.run_epochs asks of a whole-student run: each epoch's order (edgekd's, less
    the samples the board settled), its batches streamed with the byte and time budgets
    checked after each, and after each epoch the validation KL measured on the board that
    decides the weights kept."""

    def __init__(self, trainer, board, train_ids, val_ids, halter, setup_bytes, on_epoch):
        self.trainer, self.board, self.halter = trainer, board, halter
        self.train_ids, self.val_ids = train_ids, val_ids
        self.setup_bytes, self.on_epoch = setup_bytes, on_epoch
        self.settled = np.zeros(len(trainer.y), bool)
        self.best = {"kl": np.inf, "epoch": 0, "params": None}
        self.start = time.perf_counter()

    def order_of(self, epoch):
        return epoch_order(self.train_ids, self.trainer.cfg.seed, epoch, self.settled)

    def run_batches(self, epoch, order):
        tr = self.trainer
        lr = float(tr.cfg.lr_at(epoch))
        total = 0.0
        for b in epochs.batches(order, tr.cfg.batch):
            r = tr.frames(b, False, lr, len(b))
            total += r["loss"]
            for ids in r["settled"]:
                self.settled[ids] = True
            link = tr.link.sent + tr.link.received - self.setup_bytes
            if self.halter.budget(link, time.perf_counter() - self.start):
                return None
        return total / len(order)

    def after_epoch(self, epoch, order, loss):
        tr = self.trainer
        frac = epochs.settled_fraction(self.settled, self.train_ids)
        _, val_kl = tr.measured(tr.measure, self.val_ids)
        if val_kl is not None and tr.cfg.restore_best and val_kl < self.best["kl"]:
            self.best.update(kl=val_kl, epoch=epoch + 1,
                             params=tr.measured(student.get_params, tr.client, self.board))
        if self.on_epoch:
            self.on_epoch({"epoch": epoch + 1, "loss": loss, "streamed": len(order),
                           "settled_fraction": frac, "val_kl": val_kl})
        return frac, val_kl


def read_student(client):
    """(spec, flat float32 params) of the student on the board."""
    _, setup = student.query(client)
    if setup is None:
        raise EdgekdError("the board has no float student: `edgekd board train` one first")
    board = commands.info(client)
    return setup.spec(), student.get_params(client, board)
