"""The RAM a board needs to train a float32 MLP student on itself (the board protocol's
TRAIN_SETUP, docs/protocol.md section 11.8): one formula shared by the designer (board
profiles), the host before `edgekd board train`, and the boards, which lay their training
arena out the same way and report what they allocated.

Arena, in float32 values unless said: the flat parameter vector P, its gradient P, the
optimizer state (SGD momentum P; Adam m and v, 2P), one frame of activations (rows x (inputs
+ every layer's outputs); backward writes each layer's input gradient over its input, so no
other buffer is needed), and one settle byte per tracked sample (streak and settled flag),
rounded up to 4. Beside the arena, the firmware's static frame buffers: the COBS packet being
received, the decoded request, the kept reply and a NAK buffer."""

from dataclasses import asdict, dataclass

FRAME_OVERHEAD = 14     # magic, version, type, flags, reserved, length u32, crc32 u32
NAK_BUFFER = FRAME_OVERHEAD + 3 + 64
SEQ_BYTES, STEP_HEAD_BYTES, STEP_REPLY_BYTES, EVAL_REPLY_BYTES = 2, 16, 28, 4
MAX_ROWS = 64           # the C firmware's EKB_TRAIN_MAX_ROWS
DEFAULT_MAX_PAYLOAD = 2048   # the C firmware's EKB_MAX_PAYLOAD


@dataclass(frozen=True)
class TrainPlan:
    params: int
    grads: int
    optimizer: int
    activations: int
    settle: int
    frame_buffers: int

    @property
    def arena(self):
        """Bytes taken from the training arena."""
        return self.params + self.grads + self.optimizer + self.activations + self.settle

    @property
    def total(self):
        return self.arena + self.frame_buffers

    def to_dict(self):
        return {**asdict(self), "arena": self.arena, "total": self.total}


def frame_buffers(max_payload):
    """The firmware's receive packet, decoded request, kept reply and NAK buffers."""
    frame = FRAME_OVERHEAD + max_payload
    return frame + frame // 254 + 2 + 2 * frame + NAK_BUFFER


def dense_units(spec):
    """(inputs, [(units, activation)]) of a dense-only MLP spec, or None for other students."""
    shape = spec.get("input_shape", [])
    layers = spec.get("layers", [])
    if len(shape) != 1 or not layers or any(layer.get("type") != "dense" for layer in layers):
        return None
    return shape[0], [(layer["units"], layer.get("activation", "none")) for layer in layers]


def train_plan(inputs, units, optimizer, rows, samples, max_payload):
    """TrainPlan for a dense MLP of `inputs` features and layer widths `units`, trained with
    `optimizer` ("sgd"/"nesterov" or "adam"/"adamw"), `rows` samples per frame, `samples`
    tracked for settling, on a board whose frames carry `max_payload` bytes."""
    params, prev = 0, inputs
    for u in units:
        params += prev * u + u
        prev = u
    p = 4 * params
    return TrainPlan(params=p, grads=p, optimizer=p * (2 if optimizer.startswith("adam") else 1),
                     activations=4 * rows * (inputs + sum(units)),
                     settle=(samples + 3) // 4 * 4, frame_buffers=frame_buffers(max_payload))


def frame_rows(max_payload, inputs, classes, x_bytes, cap=MAX_ROWS):
    """Samples one TRAIN_STEP frame (and its EVAL reply) carries: 0 when not even one fits."""
    room = max_payload - SEQ_BYTES
    per = 6 + inputs * x_bytes + 4 * classes
    return max(0, min((room - STEP_HEAD_BYTES) // per, (room - EVAL_REPLY_BYTES) // (4 * classes),
                      (room - STEP_REPLY_BYTES) // 4, cap))


def designed_plan(spec, optimizer, batch, max_payload=DEFAULT_MAX_PAYLOAD, x_bytes=1,
                  samples=0):
    """What `edgekd design` predicts for training `spec` on a board (u8 inputs, the C
    firmware's frames) with `samples` tracked for settling (one byte each: the data's
    training split); None for a student the board cannot train (not a dense MLP)."""
    mlp = dense_units(spec)
    if mlp is None:
        return None
    inputs, layers = mlp
    rows = min(batch, frame_rows(max_payload, inputs, spec["num_classes"], x_bytes))
    if rows < 1:
        return None
    plan = train_plan(inputs, [u for u, _ in layers], optimizer, rows, samples, max_payload)
    out = {**plan.to_dict(), "rows": rows, "max_payload": max_payload, "samples": samples}
    if not samples:
        out["note"] = "plus one settle byte per training sample"
    return out
