"""Host-side requests for the float32 student a board trains itself (docs/protocol.md,
section 11.8): TRAIN_SETUP (lay it out in the board's arena; the reply is the board's plan),
PARAMS_SET / PARAMS_GET (its flat weight vector, edgekd's order), TRAIN_STEP (one frame of a
batch) and EVAL (logits). The epoch loop built on these is board_train.py."""

import numpy as np

from edgekd.design.board_memory import dense_units, frame_rows, train_plan
from edgekd.errors import EdgekdError
from edgekd.order import split_validation

from . import messages as m
from .commands import DoesNotFit


def query(client):
    """(the board's plan dict, StudentSetup or None) of what is set up now."""
    return m.unpack_setup_reply(client.request(m.TRAIN_SETUP))


def setup_for(spec, cfg, rows, samples, x_dtype, x_lo=0.0, x_step=1.0):
    """The StudentSetup of an edgekd dense MLP spec and a TrainConfig. As on the device, no
    sample settles when the training split (samples less the validation slice) is under
    cfg.halting.min_samples."""
    mlp = dense_units(spec)
    if mlp is None:
        raise EdgekdError("a board trains dense MLP students (input_shape [F], dense layers "
                          "with relu, relu6, tanh or none); this spec has other layers")
    inputs, layers = mlp
    opt = {"sgd": "sgd", "adam": "adam"}.get(cfg.optimizer)
    if opt is None or cfg.weight_decay:
        raise EdgekdError(f"a board trains with sgd (momentum) or adam, no weight decay; "
                          f"got {cfg.optimizer}")
    return m.StudentSetup(
        optimizer=m.OPTIMIZER_CODES[opt], x_dtype=x_dtype,
        halting=cfg.halting.enabled and len(split_validation(samples, cfg.val_fraction,
                                                             cfg.seed)[0]) >= cfg.halting.min_samples,
        inputs=inputs, rows=rows, samples=samples, temperature=cfg.temperature,
        alpha=cfg.effective_alpha, beta1=cfg.momentum if opt == "sgd" else 0.9, beta2=0.999,
        adam_eps=1e-8, halt_eps=cfg.halting.eps, patience=cfg.halting.patience,
        threshold=m.THRESHOLD_CODES[cfg.halting.threshold], x_lo=x_lo,
        x_step=x_step, layers=[(u, m.ACT_CODES[a]) for u, a in layers])


def predicted_plan(setup, max_payload):
    return train_plan(setup.inputs, [u for u, _ in setup.layers],
                      "adam" if setup.optimizer == m.OPTIMIZER_CODES["adam"] else "sgd",
                      setup.rows, setup.samples, max_payload)


def configure(client, board, setup):
    """Refuses (DoesNotFit, naming the bytes) a student whose predicted plan exceeds the
    board's training arena before sending it; then TRAIN_SETUP. Returns (predicted
    TrainPlan, the board's plan dict)."""
    capacity = query(client)[0]["capacity"]
    plan = predicted_plan(setup, board.max_payload)
    if plan.arena > capacity:
        raise DoesNotFit(f"training this student on board {board.name} needs {plan.arena:,} "
                         f"bytes of arena (weights {plan.params:,}, gradients {plan.grads:,}, "
                         f"optimizer {plan.optimizer:,}, activations {plan.activations:,}, "
                         f"settle {plan.settle:,}); the board has {capacity:,}")
    got, echoed = m.unpack_setup_reply(client.request(m.TRAIN_SETUP, setup.pack()))
    if echoed is None or echoed.layers != [tuple(x) for x in setup.layers]:
        raise EdgekdError("board answered TRAIN_SETUP with a different student")
    return plan, got


def set_params(client, board, flat):
    data = np.asarray(flat, "<f4").tobytes()
    room = (board.max_payload - m.SEQ.size - m.U32.size) // 4 * 4
    for off in range(0, len(data), room):
        client.request(m.PARAMS_SET, m.U32.pack(off) + data[off:off + room])


def get_params(client, board):
    data, off, total = bytearray(), 0, None
    want = min(0xFFFF, board.max_payload - m.SEQ.size - m.PARAMS_REPLY.size)
    while total is None or off < total:
        body = client.request(m.PARAMS_GET, m.PARAMS_REQ.pack(off, want))
        total, r_off = m.PARAMS_REPLY.unpack_from(body)
        chunk = body[m.PARAMS_REPLY.size:]
        if r_off != off or total % 4 or (not chunk and off < total):
            raise EdgekdError("board sent an inconsistent PARAMS_GET reply")
        data += chunk
        off += len(chunk)
    return np.frombuffer(bytes(data[:total]), "<f4").astype(np.float32)


def step(client, frame):
    r = m.unpack_step_reply(client.request(m.TRAIN_STEP, m.pack_step(frame)))
    if r.n != len(frame.ids):
        raise EdgekdError(f"board answered TRAIN_STEP for {r.n} samples, sent {len(frame.ids)}")
    return r


def logits(client, setup, x_rows, classes):
    """Float logits [n, C] of input rows already in the setup's dtype, `rows` per frame."""
    out = []
    for i in range(0, len(x_rows), setup.rows):
        part = x_rows[i:i + setup.rows]
        xdt = "<f4" if setup.x_dtype == m.X_F32 else "u1"
        body = client.request(m.EVAL, m.EVAL_HEAD.pack(setup.x_dtype, len(part))
                              + np.ascontiguousarray(part, xdt).tobytes())
        n, c = m.EVAL_REPLY.unpack_from(body)
        if n != len(part) or c != classes or len(body) != m.EVAL_REPLY.size + 4 * n * c:
            raise EdgekdError("board sent an inconsistent EVAL reply")
        out.append(np.frombuffer(body, "<f4", n * c, m.EVAL_REPLY.size).reshape(n, c))
    return np.concatenate(out) if out else np.zeros((0, classes), np.float32)


def rows_per_frame(board, inputs, x_dtype, classes, cap=64):
    """Samples one TRAIN_STEP (and its EVAL reply) can carry on this board."""
    n = frame_rows(board.max_payload, inputs, classes, 4 if x_dtype == m.X_F32 else 1, cap)
    if n < 1:
        raise DoesNotFit(f"board {board.name}'s frames ({board.max_payload} bytes) cannot carry "
                         f"one training sample")
    return n
