"""The emulated board: what the C firmware does (docs/protocol.md, section 11), with TFLM
running .tflite models, and a board profile's memory limits. handle() maps one request to
one reply; framing, replay of resends and faults live in server.py."""

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np

from edgekd.design.profiles import FIRMWARE_FLASH, FIRMWARE_RAM, get_profile
from edgekd.errors import EdgekdError
from edgekd.export.qmath import quantize as quantize_input

from .. import messages as m
from .student import BoardStudent, StudentRefusal
from .tflm_model import ArenaTooSmall, TflmModel


class Refusal(Exception):
    """The board's answer is BOARD_ERROR `code`."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code


@dataclass
class BoardSpec:
    name: str
    ram: int
    flash: int
    clock_hz: int
    arena: int          # the static tensor arena the firmware declares
    max_payload: int

    @property
    def max_model(self):
        return self.flash - FIRMWARE_FLASH

    @property
    def head_ram(self):
        """RAM left for the trainable head once firmware and arena have theirs."""
        return self.ram - FIRMWARE_RAM - self.arena

    @classmethod
    def from_profile(cls, name, arena=None, ram=None, flash=None, max_payload=4096):
        p = get_profile(name)
        if p.kind != "mcu" or p.flash_bytes is None:
            raise EdgekdError(f"profile {p.name} is a Linux board; emulate a microcontroller "
                              f"(esp32-s3, stm32f746, nrf52840)")
        ram = p.ram_bytes if ram is None else ram
        flash = p.flash_bytes if flash is None else flash
        arena = (ram - FIRMWARE_RAM) // 2 if arena is None else arena
        spec = cls(p.name, ram, flash, int(p.clock_hz), arena, max_payload)
        if arena < 1 or spec.head_ram < 0:
            raise EdgekdError(f"an arena of {arena:,} bytes does not fit {ram:,} bytes of RAM "
                              f"with {FIRMWARE_RAM:,} for the firmware")
        if spec.max_model < 1:
            raise EdgekdError(f"{flash:,} bytes of flash leave no room for a model next to "
                              f"the {FIRMWARE_FLASH:,}-byte firmware")
        if not 64 <= max_payload <= 1 << 20:
            raise EdgekdError("max payload must be within 64 B .. 1 MiB")
        return spec


class EmulatedBoard:
    def __init__(self, spec, faults=None):
        self.spec = spec
        self.faults = faults
        self.flash = bytearray()
        self.model = None
        self.model_sha = b"\0" * 32
        self.deploy = None   # {"size", "sha", "written"} while a DEPLOY is under way
        self.student = None  # the float student of TRAIN_SETUP (student.py)

    def handle(self, ftype, body):
        """(reply type, reply body) for one request; Refusal becomes BOARD_ERROR."""
        handler = {m.INFO: self.info, m.DEPLOY_BEGIN: self.deploy_begin,
                   m.DEPLOY_CHUNK: self.deploy_chunk, m.DEPLOY_END: self.deploy_end,
                   m.INFER: self.infer, m.TRAIN_LAST: self.train_last,
                   m.GET_WEIGHTS: self.get_weights, m.RESET: self.reset,
                   m.SET_WEIGHTS: self.set_weights, m.BENCH: self.bench,
                   m.TRAIN_SETUP: self.train_setup, m.TRAIN_STEP: self.train_step,
                   m.EVAL: self.eval, m.PARAMS_GET: self.params_get,
                   m.PARAMS_SET: self.params_set}.get(ftype)
        if handler is None:
            raise Refusal(m.E_REFUSED, f"unknown request type {ftype:#x}")
        try:
            return ftype | m.REPLY, handler(body)
        except StudentRefusal as e:
            raise Refusal(e.code, str(e)) from None
        except EdgekdError as e:  # a malformed body
            raise Refusal(m.E_REFUSED, str(e)) from None

    # requests -------------------------------------------------------------------------
    def info(self, body):
        _empty(body, "INFO")
        s, mod = self.spec, self.model
        fields = {"proto": m.PROTO_VERSION, "format": m.FORMAT_TFLITE, "flags": 0,
                  "ram": s.ram, "flash": s.flash, "clock_hz": s.clock_hz, "arena": s.arena,
                  "max_model": s.max_model, "max_payload": s.max_payload, "model_bytes": 0,
                  "arena_used": 0, "model_sha256": b"\0" * 32, "in_dtype": 0, "out_dtype": 0,
                  "in_features": 0, "in_scale": 0.0, "in_zero_point": 0, "out_features": 0,
                  "out_scale": 0.0, "out_zero_point": 0, "head_in": 0, "head_out": 0,
                  "name": s.name}
        if mod is not None:
            trained = mod.head is not None and mod.head.trained
            out_i8 = mod.out_dtype == np.int8 and not trained
            fields.update(
                flags=m.FLAG_MODEL | (m.FLAG_TRAINED if trained else 0),
                model_bytes=len(self.flash), arena_used=mod.arena_used,
                model_sha256=self.model_sha,
                in_dtype=m.DT_I8 if mod.in_dtype == np.int8 else m.DT_F32,
                out_dtype=m.DT_I8 if out_i8 else m.DT_F32,
                in_features=mod.in_features, in_scale=mod.in_quant[0],
                in_zero_point=mod.in_quant[1], out_features=mod.out_features,
                out_scale=mod.out_quant[0] if out_i8 else 1.0,
                out_zero_point=mod.out_quant[1] if out_i8 else 0,
                head_in=0 if mod.head is None else mod.head.w.shape[1],
                head_out=0 if mod.head is None else mod.head.w.shape[0])
        return m.BoardInfo(**fields).pack()

    def deploy_begin(self, body):
        _size(body, m.DEPLOY_BEGIN_S.size, "DEPLOY_BEGIN")
        size, fmt, sha = m.DEPLOY_BEGIN_S.unpack(body)
        if fmt != m.FORMAT_TFLITE:
            raise Refusal(m.E_REFUSED, "this board runs TFLM: it takes .tflite models (format 1)")
        if size > self.spec.max_model:
            raise Refusal(m.E_NO_FIT, f"a model of {size:,} bytes does not fit the "
                                      f"{self.spec.max_model:,} bytes of flash left for models")
        if size == 0:
            raise Refusal(m.E_REFUSED, "DEPLOY_BEGIN: empty model")
        # the new model goes to a staging area: the working one stays until it has passed
        self.deploy = {"size": size, "sha": sha, "written": 0, "flash": bytearray(size)}
        return m.U32.pack(self.spec.max_payload - m.SEQ.size - m.CHUNK_HEAD.size)

    def deploy_chunk(self, body):
        d = self.deploy
        if d is None:
            raise Refusal(m.E_REFUSED, "DEPLOY_CHUNK without DEPLOY_BEGIN")
        if len(body) < m.CHUNK_HEAD.size:
            raise Refusal(m.E_REFUSED, "DEPLOY_CHUNK: short")
        off, crc = m.CHUNK_HEAD.unpack_from(body)
        data = body[m.CHUNK_HEAD.size:]
        if off > d["written"] or off + len(data) > d["size"]:
            raise Refusal(m.E_REFUSED, "DEPLOY_CHUNK: offset out of order or past the model's end")
        written = data if self.faults is None else self.faults.flash_write(data)
        d["flash"][off:off + len(data)] = written
        if zlib.crc32(d["flash"][off:off + len(data)]) != crc:
            raise Refusal(m.E_CHUNK_CRC, "chunk failed its CRC after writing")
        d["written"] = max(d["written"], off + len(data))
        return m.U32.pack(d["written"])

    def deploy_end(self, body):
        _empty(body, "DEPLOY_END")
        d = self.deploy
        if d is None:
            raise Refusal(m.E_REFUSED, "DEPLOY_END without DEPLOY_BEGIN")
        if d["written"] != d["size"]:
            raise Refusal(m.E_REFUSED, "DEPLOY_END before every chunk arrived")
        self.deploy = None
        flash = d["flash"]
        sha = hashlib.sha256(flash).digest()
        if sha != d["sha"]:
            raise Refusal(m.E_HASH, "the model's SHA-256 does not match; deploy it again")
        try:
            model = TflmModel(bytes(flash), self.spec.arena)
        except ArenaTooSmall as e:
            raise Refusal(m.E_NO_FIT, str(e)) from None
        except EdgekdError as e:
            raise Refusal(m.E_REFUSED, f"cannot load the model: {e}") from None
        if model.head is not None and model.head.nbytes > self.spec.head_ram:
            raise Refusal(m.E_NO_FIT, f"training the last layer needs {model.head.nbytes:,} "
                                      f"bytes of RAM; {self.spec.head_ram:,} are left beside "
                                      f"the arena")
        self.model, self.model_sha, self.flash = model, sha, flash
        return m.U32X2.pack(model.arena_used, len(flash))

    def _model(self):
        if self.model is None:
            raise Refusal(m.E_NO_MODEL, "no model deployed")
        return self.model

    def _inputs(self, dt, rows):
        mod = self.model
        if dt == m.DT_F32 and not np.isfinite(rows).all():
            raise Refusal(m.E_REFUSED, "an input is NaN or infinite")
        if mod.in_dtype == np.int8:
            return rows if dt == m.DT_I8 else quantize_input(rows, *mod.in_quant)
        if dt != m.DT_F32:
            raise Refusal(m.E_REFUSED, "this model takes float32 inputs")
        return rows

    def infer(self, body):
        mod = self._model()
        dt, rows = m.unpack_infer(body, lambda _dt: mod.in_features)
        rows = self._inputs(dt, rows)
        trained = mod.head is not None and mod.head.trained
        reply = m.INFER_REPLY_HEAD.size + len(rows) * mod.out_features * 4
        if m.SEQ.size + reply > self.spec.max_payload:
            raise Refusal(m.E_BUSY, "INFER: the reply would exceed the frame buffer")
        outs = []
        for row in rows:
            out, feat = mod.run(row)
            outs.append(mod.head.logits(feat[None])[0] if trained else out)
        y = np.array(outs).reshape(len(rows), mod.out_features)
        if not trained and mod.out_dtype == np.int8:
            return m.pack_infer_reply(m.DT_I8, y, *mod.out_quant)
        return m.pack_infer_reply(m.DT_F32, y.astype(np.float32), 1.0, 0)

    def train_last(self, body):
        mod = self._model()
        if mod.head is None:
            raise Refusal(m.E_NO_MODEL, "the model has no dense last layer to train")
        b = m.unpack_train(body, mod.in_features, mod.out_features)
        if len(b.labels) == 0 or np.any(b.labels >= mod.out_features):
            raise Refusal(m.E_REFUSED, "TRAIN_LAST: empty batch or a label out of range")
        if not (0 <= b.lr < 1e6 and 0 < b.temperature < 1e6 and 0 <= b.alpha <= 1):
            raise Refusal(m.E_REFUSED, "TRAIN_LAST: lr, temperature or alpha out of range")
        rows = self._inputs(b.dtype, b.x)
        if not np.isfinite(b.teacher).all():
            raise Refusal(m.E_REFUSED, "TRAIN_LAST: a teacher logit is NaN or infinite")
        feats = np.stack([mod.run(r)[1] for r in rows])
        loss, kl, agree = mod.head.step(feats, b.teacher, b.labels, b.lr, b.temperature,
                                        b.alpha)
        return m.pack_train_reply(loss, kl, agree)

    def get_weights(self, body):
        mod = self._model()
        if mod.head is None:
            raise Refusal(m.E_NO_MODEL, "the model has no dense last layer")
        _size(body, m.WEIGHTS_REQ.size, "GET_WEIGHTS")
        off, want = m.WEIGHTS_REQ.unpack(body)
        data = mod.head.w.astype("<f4").tobytes() + mod.head.b.astype("<f4").tobytes()
        if off > len(data):
            raise Refusal(m.E_REFUSED, "GET_WEIGHTS: offset past the end")
        room = self.spec.max_payload - m.SEQ.size - m.WEIGHTS_REPLY_HEAD.size
        chunk = data[off:off + min(want, room)]
        out, inp = mod.head.w.shape
        return m.WEIGHTS_REPLY_HEAD.pack(inp, out, len(data), off) + chunk

    def set_weights(self, body):
        mod = self._model()
        if mod.head is None:
            raise Refusal(m.E_NO_MODEL, "the model has no dense last layer")
        if len(body) < m.U32.size or (len(body) - m.U32.size) % 4:
            raise Refusal(m.E_REFUSED, "SET_WEIGHTS: expected offset u32 and whole float32 values")
        (off,) = m.U32.unpack_from(body)
        values = np.frombuffer(body, "<f4", offset=m.U32.size)
        flat = np.concatenate([mod.head.w.ravel(), mod.head.b])
        if off % 4 or off // 4 + len(values) > len(flat):
            raise Refusal(m.E_REFUSED, "SET_WEIGHTS: offset or length past the layer's weights")
        if not np.isfinite(values).all():
            raise Refusal(m.E_REFUSED, "SET_WEIGHTS: a weight is NaN or infinite")
        flat[off // 4:off // 4 + len(values)] = values
        mod.head.load(flat)
        return m.U32.pack(off + 4 * len(values))

    def bench(self, body):
        """The emulator runs the inferences but has no instruction counter: counted 0."""
        mod = self._model()
        if len(body) != m.BENCH_HEAD.size + mod.in_features:
            raise Refusal(m.E_REFUSED, "BENCH: expected n u16, reserved u16 and one int8 row")
        (n,) = m.BENCH_HEAD.unpack_from(body)
        if n == 0:
            raise Refusal(m.E_REFUSED, "BENCH: n must be at least 1")
        row = np.frombuffer(body, np.int8, offset=m.BENCH_HEAD.size)
        for _ in range(n):
            mod.run(self._inputs(m.DT_I8, row[None])[0])
        return m.BENCH_REPLY.pack(0, n, 0)

    # the float student ------------------------------------------------------------------
    @property
    def train_arena(self):
        """RAM the profile leaves for training beside the firmware and the tensor arena."""
        return max(0, self.spec.head_ram)

    def train_setup(self, body):
        if not body:
            if self.student is None:
                plan = dict.fromkeys(m.PLAN_FIELDS, 0)
                plan["capacity"] = self.train_arena
                return m.pack_setup_reply(plan, None)
            return m.pack_setup_reply(self.student.plan, self.student.setup)
        setup = m.StudentSetup.unpack(body)
        if setup is None:
            raise Refusal(m.E_REFUSED, "TRAIN_SETUP: no layers")
        self.student = None
        self.student = BoardStudent(setup, self.train_arena, self.spec.max_payload)
        return m.pack_setup_reply(self.student.plan, setup)

    def _student(self):
        if self.student is None:
            raise Refusal(m.E_NO_MODEL, "no student set up (TRAIN_SETUP)")
        return self.student

    def train_step(self, body):
        st = self._student()
        _, _, frame = m.unpack_step(body, st.setup.inputs, st.classes)
        return m.pack_step_reply(st.step(frame))

    def eval(self, body):
        st = self._student()
        if len(body) < m.EVAL_HEAD.size:
            raise Refusal(m.E_REFUSED, "EVAL: short")
        dt, n = m.EVAL_HEAD.unpack_from(body)
        size = 4 if dt == m.X_F32 else 1
        if len(body) != m.EVAL_HEAD.size + n * st.setup.inputs * size:
            raise Refusal(m.E_REFUSED, "EVAL: length does not match n x features")
        x = np.frombuffer(body, "<f4" if dt == m.X_F32 else "u1", offset=m.EVAL_HEAD.size)
        y = st.logits(dt, x.reshape(n, st.setup.inputs))
        return m.EVAL_REPLY.pack(n, st.classes) + y.astype("<f4").tobytes()

    def params_get(self, body):
        st = self._student()
        _size(body, m.PARAMS_REQ.size, "PARAMS_GET")
        off, want = m.PARAMS_REQ.unpack(body)
        data = st.model.flat_params.astype("<f4").tobytes()
        if off > len(data):
            raise Refusal(m.E_REFUSED, "PARAMS_GET: offset past the end")
        room = self.spec.max_payload - m.SEQ.size - m.PARAMS_REPLY.size
        return m.PARAMS_REPLY.pack(len(data), off) + data[off:off + min(want, room)]

    def params_set(self, body):
        st = self._student()
        if len(body) < m.U32.size or (len(body) - m.U32.size) % 4:
            raise Refusal(m.E_REFUSED, "PARAMS_SET: expected offset u32 and whole float32 values")
        (off,) = m.U32.unpack_from(body)
        values = np.frombuffer(body, "<f4", offset=m.U32.size)
        flat = st.model.flat_params
        if off % 4 or off // 4 + len(values) > len(flat):
            raise Refusal(m.E_REFUSED, "PARAMS_SET: offset or length past the student's weights")
        if not np.isfinite(values).all():
            raise Refusal(m.E_REFUSED, "PARAMS_SET: a weight is NaN or infinite")
        flat[off // 4:off // 4 + len(values)] = values
        return m.U32.pack(off + 4 * len(values))

    def reset(self, body):
        if len(body) != 1 or body[0] > 1:
            raise Refusal(m.E_REFUSED, "RESET: expected one byte, 0 or 1")
        self.deploy = None
        if body[0] == 1:
            self.model, self.flash, self.model_sha = None, bytearray(), b"\0" * 32
        elif self.model is not None and self.model.head is not None:
            self.model.head.reset()
        return b""


def _empty(body, what):
    _size(body, 0, what)


def _size(body, n, what):
    if len(body) != n:
        raise Refusal(m.E_REFUSED, f"{what}: expected {n} bytes, got {len(body)}")
