"""The emulated board's float student (docs/protocol.md, section 11.8), computed with edgekd's
own layers, KD loss, optimizers and settling rule (SettleTracker), so the emulator trains
exactly as the device trainer would; its arena is the planner's (edgekd.design.board_memory),
checked against the RAM the board profile leaves."""

import numpy as np

from edgekd.design.board_memory import train_plan
from edgekd.distill.halting import HaltingConfig, SettleTracker
from edgekd.distill.losses import kd_loss, teacher_information
from edgekd.distill.optim import SGD, Adam
from edgekd.errors import EdgekdError
from edgekd.nn.model import Sequential

from .. import messages as m


class StudentRefusal(Exception):
    def __init__(self, code, text):
        super().__init__(text)
        self.code = code


class BoardStudent:
    def __init__(self, setup, capacity, max_payload):
        s = self.setup = setup
        self._check(s)
        plan = train_plan(s.inputs, [u for u, _ in s.layers],
                          "adam" if s.optimizer == m.OPTIMIZER_CODES["adam"] else "sgd",
                          s.rows, s.samples, max_payload)
        self.plan = {"capacity": capacity, **{k: v for k, v in plan.to_dict().items()
                                              if k in m.PLAN_FIELDS}}
        if plan.arena > capacity:
            raise StudentRefusal(m.E_NO_FIT, f"TRAIN_SETUP: the student needs {plan.arena:,} "
                                             f"bytes of training arena; the board has {capacity:,}")
        try:
            self.model = Sequential(setup.spec(), where="TRAIN_SETUP")
        except EdgekdError as e:
            raise StudentRefusal(m.E_REFUSED, str(e)) from None
        self.model.flat_params[...] = 0
        pairs = self.model.trainables()
        if s.optimizer == m.OPTIMIZER_CODES["sgd"]:
            self.opt = SGD(pairs, 0.0, momentum=s.beta1)
        else:
            self.opt = Adam(pairs, 0.0, betas=(s.beta1, s.beta2), eps=s.adam_eps)
        self.acc = np.zeros_like(self.model.flat_grads)
        threshold = {v: k for k, v in m.THRESHOLD_CODES.items()}[s.threshold]
        self.tracker = SettleTracker(s.samples, HaltingConfig(
            enabled=s.halting, eps=s.halt_eps, patience=s.patience, threshold=threshold))
        self.classes = s.layers[-1][0]

    @staticmethod
    def _check(s):
        ok = (s.optimizer in (0, 1) and s.x_dtype in (m.X_F32, m.X_U8) and s.inputs >= 1
              and 1 <= s.rows <= 64 and 1 <= s.patience <= 127 and 0 < s.temperature < 1e6
              and 0 <= s.alpha <= 1 and 0 <= s.beta1 < 1 and 0 <= s.beta2 < 1
              and 0 < s.adam_eps < 1 and 0 <= s.halt_eps < np.inf and np.isfinite(s.x_lo)
              and 0 < s.x_step < np.inf and s.threshold in m.THRESHOLD_CODES.values()
              and all(u >= 1 and a in m.ACT_NAMES for u, a in s.layers) and 1 <= len(s.layers) <= 8)
        if not ok:
            raise StudentRefusal(m.E_REFUSED, "TRAIN_SETUP: a field is out of range")
        if not 2 <= s.layers[-1][0] <= 64:
            raise StudentRefusal(m.E_NO_FIT, "TRAIN_SETUP: the last layer must have 2 to 64 outputs")

    def inputs(self, dtype, x):
        if dtype != self.setup.x_dtype:
            raise StudentRefusal(m.E_REFUSED, "input dtype differs from TRAIN_SETUP's")
        if dtype == m.X_U8:
            return (np.float32(self.setup.x_lo) + x.astype(np.float32)
                    * np.float32(self.setup.x_step)).astype(np.float32)
        if not np.isfinite(x).all():
            raise StudentRefusal(m.E_REFUSED, "an input is NaN or infinite")
        return np.asarray(x, np.float32)

    def step(self, f):
        n = len(f.ids)
        measure = bool(f.flags & m.STEP_MEASURE)
        if n == 0 or n > self.setup.rows or f.batch < n or f.flags > 7:
            raise StudentRefusal(m.E_REFUSED, "TRAIN_STEP: n must be 1..rows and batch >= n")
        if not 0 <= f.lr < 1e6:
            raise StudentRefusal(m.E_REFUSED, "TRAIN_STEP: lr out of range")
        if np.any(f.labels >= self.classes) or (not measure and np.any(f.ids >= self.setup.samples)):
            raise StudentRefusal(m.E_REFUSED, "TRAIN_STEP: a label or sample id is out of range")
        x = self.inputs(f.dtype, f.x)
        if not np.isfinite(f.teacher).all():
            raise StudentRefusal(m.E_REFUSED, "TRAIN_STEP: a teacher logit is NaN or infinite")
        model = self.model
        logits = model.forward(x, training=not measure)
        res = kd_loss(logits, f.teacher, f.labels.astype(np.int64), self.setup.temperature,
                      self.setup.alpha)
        with np.errstate(all="ignore"):
            loss_sum = np.float32(res.loss) * np.float32(n)
        if not np.isfinite(loss_sum):
            raise StudentRefusal(m.E_REFUSED, "TRAIN_STEP: the loss is not finite; the weights are unchanged")
        settled = np.zeros(0, np.int64)
        if not measure:
            if f.flags & m.STEP_BEGIN:
                self.acc[...] = 0
            res.grad *= np.float32(n / f.batch)
            model.backward(res.grad, input_grad=False)
            self.acc += model.flat_grads
            if f.flags & m.STEP_END:
                self._optimizer_step(f.lr)
            info = teacher_information(f.teacher, self.setup.temperature)
            settled = self.tracker.observe(f.ids.astype(np.int64), res.kl, res.agree, info=info)
        return m.StepResult(float(loss_sum), float(res.kl.sum()), n, int(res.agree.sum()),
                            int((logits.argmax(axis=1) == f.labels).sum()), 0, False, settled)

    def _optimizer_step(self, lr):
        saved = [a.copy() for a in (self.model.flat_params, *self._opt_state())]
        t = self.opt.t
        self.model.flat_grads[...] = self.acc
        self.opt.lr = lr
        with np.errstate(all="ignore"):
            self.opt.step()
        if not all(np.isfinite(a).all() for a in (self.model.flat_params, *self._opt_state())):
            for dst, src in zip((self.model.flat_params, *self._opt_state()), saved):
                dst[...] = src
            self.opt.t = t
            raise StudentRefusal(m.E_REFUSED, "TRAIN_STEP: the step would make a weight NaN "
                                              "or infinite; the weights are unchanged")

    def _opt_state(self):
        return [a for arrs in self.opt.bufs.values() for a in arrs]

    def logits(self, dtype, x):
        if len(x) == 0 or len(x) > self.setup.rows:
            raise StudentRefusal(m.E_REFUSED, "EVAL: n must be 1..rows")
        return self.model.forward(self.inputs(dtype, x)).astype(np.float32)
