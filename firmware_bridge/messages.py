"""The board protocol's messages: types, error codes and byte layouts (docs/protocol.md,
section 11). Every payload starts with the request's sequence number (u16); a reply echoes
it. Integers and floats are little-endian. Both the host and the emulator use these
functions, so the two sides cannot drift apart; the C firmware follows the document."""

import struct
from dataclasses import dataclass

import numpy as np

from edgekd.kernels.activations import CODES as ACTIVATION_CODES
from edgekd.link.frames import ProtocolError

PROTO_VERSION = 1

INFO, DEPLOY_BEGIN, DEPLOY_CHUNK, DEPLOY_END, INFER, TRAIN_LAST, GET_WEIGHTS, RESET = range(0x20, 0x28)
SET_WEIGHTS = 0x28
BENCH = 0x29
BENCH_HEAD = struct.Struct("<H2x")
BENCH_REPLY = struct.Struct("<QHBx")
REPLY = 0x80            # a reply's type is the request's type | REPLY
BOARD_ERROR = 0x7F      # the board's refusal or NAK: code u8 + UTF-8 text
NAMES = {INFO: "INFO", DEPLOY_BEGIN: "DEPLOY_BEGIN", DEPLOY_CHUNK: "DEPLOY_CHUNK",
         DEPLOY_END: "DEPLOY_END", INFER: "INFER", TRAIN_LAST: "TRAIN_LAST",
         GET_WEIGHTS: "GET_WEIGHTS", RESET: "RESET", SET_WEIGHTS: "SET_WEIGHTS", BENCH: "BENCH"}

# BOARD_ERROR codes
E_DAMAGED = 1     # a frame arrived damaged (seq 0xFFFF): the host resends at once
E_REFUSED = 2     # malformed or out-of-place request
E_NO_FIT = 3      # the model or its arena does not fit the board
E_CHUNK_CRC = 4   # a deploy chunk failed its CRC after writing: resend that chunk
E_HASH = 5        # the whole model failed its SHA-256 check: deploy again
E_NO_MODEL = 6    # no model deployed, or the model has no trainable last layer
E_BUSY = 7        # the board cannot do that now (e.g. payload too large for its buffer)
E_FAULT = 8       # (seq 0xFFFF) the firmware faulted (MPU, bus, usage) and resets itself
NO_SEQ = 0xFFFF

FORMAT_TFLITE, FORMAT_EKB = 1, 2
FORMAT_NAMES = {FORMAT_TFLITE: "tflite", FORMAT_EKB: "ekb"}
DT_F32, DT_I8 = 0, 1
DTYPES = {DT_F32: np.dtype("<f4"), DT_I8: np.dtype("i1")}

SEQ = struct.Struct("<H")
INFO_FIXED = struct.Struct("<HBBIIIIIIII32sBBHIfiIfiIIB")
DEPLOY_BEGIN_S = struct.Struct("<IB3x32s")
CHUNK_HEAD = struct.Struct("<II")
U32 = struct.Struct("<I")
U32X2 = struct.Struct("<II")
INFER_HEAD = struct.Struct("<BxH")
INFER_REPLY_HEAD = struct.Struct("<BxHH2xfi")
TRAIN_HEAD = struct.Struct("<fffBxH")
TRAIN_REPLY_HEAD = struct.Struct("<fH2x")
WEIGHTS_REQ = struct.Struct("<IH")
WEIGHTS_REPLY_HEAD = struct.Struct("<IIII")

FLAG_MODEL, FLAG_TRAINED = 1, 2


def split_seq(payload):
    if len(payload) < SEQ.size:
        raise ProtocolError(f"board message of {len(payload)} bytes has no sequence number")
    return SEQ.unpack_from(payload)[0], payload[SEQ.size:]


def with_seq(seq, body):
    return SEQ.pack(seq) + body


def _need(body, size, what):
    if len(body) != size:
        raise ProtocolError(f"{what}: expected {size} bytes, got {len(body)}")


@dataclass
class BoardInfo:
    proto: int
    format: int
    flags: int
    ram: int
    flash: int
    clock_hz: int
    arena: int
    max_model: int
    max_payload: int
    model_bytes: int
    arena_used: int
    model_sha256: bytes
    in_dtype: int
    out_dtype: int
    in_features: int
    in_scale: float
    in_zero_point: int
    out_features: int
    out_scale: float
    out_zero_point: int
    head_in: int
    head_out: int
    name: str

    @property
    def has_model(self):
        return bool(self.flags & FLAG_MODEL)

    @property
    def trained(self):
        return bool(self.flags & FLAG_TRAINED)

    def pack(self):
        name = self.name.encode()[:255]
        return INFO_FIXED.pack(self.proto, self.format, self.flags, self.ram, self.flash,
                               self.clock_hz, self.arena, self.max_model, self.max_payload,
                               self.model_bytes, self.arena_used, self.model_sha256,
                               self.in_dtype, self.out_dtype, 0, self.in_features,
                               self.in_scale, self.in_zero_point, self.out_features,
                               self.out_scale, self.out_zero_point, self.head_in,
                               self.head_out, len(name)) + name

    @classmethod
    def unpack(cls, body):
        if len(body) < INFO_FIXED.size:
            raise ProtocolError(f"INFO reply: {len(body)} bytes, expected at least {INFO_FIXED.size}")
        v = list(INFO_FIXED.unpack_from(body))
        name_len = v.pop()
        del v[14]  # reserved
        _need(body, INFO_FIXED.size + name_len, "INFO reply")
        name = body[INFO_FIXED.size:].decode("utf-8", "replace")
        info = cls(*v, name=name)
        if info.proto != PROTO_VERSION:
            raise ProtocolError(f"the board speaks board protocol {info.proto}; this host speaks "
                                f"{PROTO_VERSION}")
        return info

    def to_dict(self):
        d = {"name": self.name, "protocol": self.proto,
             "format": FORMAT_NAMES.get(self.format, str(self.format)),
             "ram_bytes": self.ram, "flash_bytes": self.flash, "clock_hz": self.clock_hz,
             "arena_bytes": self.arena, "max_model_bytes": self.max_model,
             "max_payload": self.max_payload, "model_loaded": self.has_model,
             "head_trained": self.trained}
        if self.has_model:
            d.update(model_bytes=self.model_bytes, arena_used=self.arena_used,
                     model_sha256=self.model_sha256.hex(),
                     input={"features": self.in_features, "dtype": _dt_name(self.in_dtype),
                            "scale": self.in_scale, "zero_point": self.in_zero_point},
                     output={"features": self.out_features, "dtype": _dt_name(self.out_dtype),
                             "scale": self.out_scale, "zero_point": self.out_zero_point},
                     head={"in": self.head_in, "out": self.head_out})
        return d


def _dt_name(code):
    return {DT_F32: "float32", DT_I8: "int8"}.get(code, str(code))


def pack_rows(dtype_code, rows):
    return np.ascontiguousarray(rows, DTYPES[dtype_code]).tobytes()


def unpack_rows(dtype_code, data, n, width, what):
    if dtype_code not in DTYPES:
        raise ProtocolError(f"{what}: unknown dtype code {dtype_code}")
    _need(data, n * width * DTYPES[dtype_code].itemsize, what)
    return np.frombuffer(data, DTYPES[dtype_code]).reshape(n, width)


# INFER
def pack_infer(dtype_code, x):
    return INFER_HEAD.pack(dtype_code, len(x)) + pack_rows(dtype_code, x)


def unpack_infer(body, width_for):
    """(dtype code, rows); `width_for(dtype)` is the model's input width."""
    if len(body) < INFER_HEAD.size:
        raise ProtocolError("INFER: short request")
    dt, n = INFER_HEAD.unpack_from(body)
    return dt, unpack_rows(dt, body[INFER_HEAD.size:], n, width_for(dt), "INFER inputs")


def pack_infer_reply(dtype_code, y, scale, zero_point):
    return INFER_REPLY_HEAD.pack(dtype_code, y.shape[0], y.shape[1], scale, zero_point) + \
        pack_rows(dtype_code, y)


def unpack_infer_reply(body):
    """Float32 outputs [n, C]: int8 outputs are dequantized with the reply's scale and zero
    point; the raw int8 rows come back too (None for float)."""
    if len(body) < INFER_REPLY_HEAD.size:
        raise ProtocolError("INFER reply: short")
    dt, n, c, scale, zp = INFER_REPLY_HEAD.unpack_from(body)
    rows = unpack_rows(dt, body[INFER_REPLY_HEAD.size:], n, c, "INFER reply")
    if dt == DT_I8:
        return (rows.astype(np.float32) - np.float32(zp)) * np.float32(scale), rows
    return rows.astype(np.float32), None


# TRAIN_LAST
@dataclass
class TrainBatch:
    lr: float
    temperature: float
    alpha: float
    dtype: int
    labels: np.ndarray      # [n] u16
    x: np.ndarray           # [n, F]
    teacher: np.ndarray     # [n, C] float32 logits


def pack_train(b):
    n = len(b.labels)
    return (TRAIN_HEAD.pack(b.lr, b.temperature, b.alpha, b.dtype, n)
            + np.asarray(b.labels, "<u2").tobytes() + pack_rows(b.dtype, b.x)
            + pack_rows(DT_F32, b.teacher))


def unpack_train(body, in_width, classes):
    if len(body) < TRAIN_HEAD.size:
        raise ProtocolError("TRAIN_LAST: short request")
    lr, T, alpha, dt, n = TRAIN_HEAD.unpack_from(body)
    if dt not in DTYPES:
        raise ProtocolError(f"TRAIN_LAST: unknown dtype code {dt}")
    xs = n * in_width * DTYPES[dt].itemsize
    _need(body, TRAIN_HEAD.size + 2 * n + xs + 4 * n * classes, "TRAIN_LAST request")
    o = TRAIN_HEAD.size
    labels = np.frombuffer(body, "<u2", n, o)
    x = unpack_rows(dt, body[o + 2 * n:o + 2 * n + xs], n, in_width, "TRAIN_LAST inputs")
    t = unpack_rows(DT_F32, body[o + 2 * n + xs:], n, classes, "TRAIN_LAST teacher logits")
    return TrainBatch(lr, T, alpha, dt, labels, x, t)


def train_request_size(n, in_width, dtype_code, classes):
    return TRAIN_HEAD.size + 2 * n + n * in_width * DTYPES[dtype_code].itemsize + 4 * n * classes


def pack_train_reply(loss, kl, agree):
    return (TRAIN_REPLY_HEAD.pack(loss, len(kl)) + np.asarray(kl, "<f4").tobytes()
            + np.asarray(agree, np.uint8).tobytes())


def unpack_train_reply(body):
    """(loss before the step, per-sample KL [n], per-sample argmax agreement [n] bool)."""
    if len(body) < TRAIN_REPLY_HEAD.size:
        raise ProtocolError("TRAIN_LAST reply: short")
    loss, n = TRAIN_REPLY_HEAD.unpack_from(body)
    _need(body, TRAIN_REPLY_HEAD.size + 5 * n, "TRAIN_LAST reply")
    o = TRAIN_REPLY_HEAD.size
    kl = np.frombuffer(body, "<f4", n, o).astype(np.float32)
    agree = np.frombuffer(body, np.uint8, n, o + 4 * n).astype(bool)
    return loss, kl, agree


# The float student trained on the board (docs/protocol.md, section 11.8)
TRAIN_SETUP, TRAIN_STEP, EVAL, PARAMS_GET, PARAMS_SET = range(0x2A, 0x2F)
NAMES.update({TRAIN_SETUP: "TRAIN_SETUP", TRAIN_STEP: "TRAIN_STEP", EVAL: "EVAL",
              PARAMS_GET: "PARAMS_GET", PARAMS_SET: "PARAMS_SET"})
OPTIMIZER_CODES = {"sgd": 0, "adam": 1}
X_F32, X_U8 = 0, 2          # TRAIN_STEP / EVAL input dtypes (u8: x = lo + q * step)
ACT_CODES = dict(ACTIVATION_CODES)   # the kernels' codes, which the firmware shares
ACT_NAMES = {v: k for k, v in ACT_CODES.items()}
STEP_BEGIN, STEP_END, STEP_MEASURE = 1, 2, 4
THRESHOLD_CODES = {"absolute": 0, "relative": 1}   # settling: KL <= eps, or <= eps * I_T
SETUP_S = struct.Struct("<BBBBHHIffffffBB2xff")
SETUP_LAYER = struct.Struct("<HBx")
PLAN_S = struct.Struct("<8I")
STEP_HEAD = struct.Struct("<BBHHHf4x")
STEP_REPLY = struct.Struct("<ffHHHHQB3x")
EVAL_HEAD = struct.Struct("<BxH")
EVAL_REPLY = struct.Struct("<HH")
PARAMS_REQ = struct.Struct("<IH")
PARAMS_REPLY = struct.Struct("<II")
PLAN_FIELDS = ("capacity", "arena", "params", "grads", "optimizer", "activations", "settle",
               "frame_buffers")


@dataclass
class StudentSetup:
    optimizer: int
    x_dtype: int
    halting: bool
    inputs: int
    rows: int
    samples: int
    temperature: float
    alpha: float
    beta1: float        # SGD: momentum
    beta2: float
    adam_eps: float
    halt_eps: float
    patience: int
    threshold: int      # THRESHOLD_CODES
    x_lo: float
    x_step: float
    layers: list        # [(units, activation code)]

    def pack(self):
        return SETUP_S.pack(self.optimizer, len(self.layers), self.x_dtype, int(self.halting),
                            self.inputs, self.rows, self.samples, self.temperature,
                            self.alpha, self.beta1, self.beta2, self.adam_eps, self.halt_eps,
                            self.patience, self.threshold, self.x_lo, self.x_step) + b"".join(
            SETUP_LAYER.pack(u, a) for u, a in self.layers)

    @classmethod
    def unpack(cls, body):
        """None for an empty setup (n_layers 0: no student on the board)."""
        if len(body) < SETUP_S.size:
            raise ProtocolError("TRAIN_SETUP: short")
        v = SETUP_S.unpack_from(body)
        n = v[1]
        if n == 0:
            return None
        _need(body, SETUP_S.size + SETUP_LAYER.size * n, "TRAIN_SETUP")
        layers = [SETUP_LAYER.unpack_from(body, SETUP_S.size + SETUP_LAYER.size * i)
                  for i in range(n)]
        return cls(v[0], v[2], bool(v[3]), *v[4:], layers=layers)

    def spec(self):
        """The edgekd student spec this setup trains."""
        return {"input_shape": [self.inputs], "num_classes": self.layers[-1][0],
                "layers": [{"type": "dense", "units": u, "activation": ACT_NAMES.get(a, str(a))}
                           for u, a in self.layers]}


def unpack_setup_reply(body):
    """(plan dict, StudentSetup or None)."""
    if len(body) < PLAN_S.size:
        raise ProtocolError("TRAIN_SETUP reply: short")
    plan = dict(zip(PLAN_FIELDS, PLAN_S.unpack_from(body)))
    return plan, StudentSetup.unpack(body[PLAN_S.size:])


def pack_setup_reply(plan, setup):
    head = PLAN_S.pack(*(plan[k] for k in PLAN_FIELDS))
    return head + (setup.pack() if setup is not None else bytes(SETUP_S.size))


@dataclass
class StepFrame:
    flags: int
    dtype: int
    batch: int
    lr: float
    ids: np.ndarray      # [n] u32
    labels: np.ndarray   # [n] u16
    x: np.ndarray        # [n, F] float32 or uint8
    teacher: np.ndarray  # [n, C] float32


def _x_itemsize(dtype_code):
    if dtype_code not in (X_F32, X_U8):
        raise ProtocolError(f"unknown student input dtype {dtype_code}")
    return 4 if dtype_code == X_F32 else 1


def step_request_size(n, inputs, dtype_code, classes):
    return STEP_HEAD.size + n * (6 + inputs * _x_itemsize(dtype_code) + 4 * classes)


def pack_step(f):
    n = len(f.ids)
    xdt = "<f4" if f.dtype == X_F32 else "u1"
    return (STEP_HEAD.pack(f.flags, f.dtype, n, f.batch, 0, f.lr)
            + np.asarray(f.ids, "<u4").tobytes() + np.asarray(f.labels, "<u2").tobytes()
            + np.ascontiguousarray(f.x, xdt).tobytes()
            + np.ascontiguousarray(f.teacher, "<f4").tobytes())


def unpack_step(body, inputs, classes):
    if len(body) < STEP_HEAD.size:
        raise ProtocolError("TRAIN_STEP: short")
    flags, dt, n, batch, _, lr = STEP_HEAD.unpack_from(body)
    size = _x_itemsize(dt)
    _need(body, step_request_size(n, inputs, dt, classes), "TRAIN_STEP request")
    o = STEP_HEAD.size
    ids = np.frombuffer(body, "<u4", n, o)
    labels = np.frombuffer(body, "<u2", n, o + 4 * n)
    o += 6 * n
    x = np.frombuffer(body, "<f4" if dt == X_F32 else "u1", n * inputs, o).reshape(n, inputs)
    t = np.frombuffer(body, "<f4", n * classes, o + n * inputs * size).reshape(n, classes)
    return flags, batch, StepFrame(flags, dt, batch, lr, ids, labels, x, t)


@dataclass
class StepResult:
    loss_sum: float
    kl_sum: float
    n: int
    agree: int
    correct: int
    instructions: int
    counted: bool
    settled: np.ndarray   # ids that settled on this visit


def pack_step_reply(r):
    ids = np.asarray(r.settled, "<u4")
    return STEP_REPLY.pack(r.loss_sum, r.kl_sum, r.n, r.agree, r.correct, len(ids),
                           r.instructions, int(r.counted)) + ids.tobytes()


def unpack_step_reply(body):
    if len(body) < STEP_REPLY.size:
        raise ProtocolError("TRAIN_STEP reply: short")
    loss, kl, n, agree, correct, k, ticks, counted = STEP_REPLY.unpack_from(body)
    _need(body, STEP_REPLY.size + 4 * k, "TRAIN_STEP reply")
    ids = np.frombuffer(body, "<u4", k, STEP_REPLY.size).astype(np.int64)
    return StepResult(loss, kl, n, agree, correct, ticks, bool(counted), ids)
