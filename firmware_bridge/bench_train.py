"""Cost of one training sample on a board: TRAIN_STEP counts the instructions its compute
retires (input decoding, forward, KD loss, backward, the optimizer step: everything but the
frame's parsing and reply) with the port's counter (SysTick under QEMU's -icount shift=0);
this runs a few batches of a student and divides by the samples."""

import numpy as np

from edgekd.distill.config import TrainConfig
from edgekd.distill.halting import HaltingConfig

from . import commands
from . import messages as m
from . import student
from .board_train import encode_x


def train_cost(client, spec, init_params, x, y, teacher, optimizer="sgd", batch=32, steps=2,
               x_codec="u8", temperature=4.0, alpha=0.9):
    """{instructions_per_sample, counted, batch, optimizer, samples}: `steps` batches of
    `batch` samples (a batch may span frames), halting off."""
    board = commands.info(client)
    dt, xq, lo, step, _ = encode_x(x, x_codec)
    classes = spec["num_classes"]
    n = min(len(y), batch * steps)
    cfg = TrainConfig(optimizer=optimizer, batch=batch, temperature=temperature, alpha=alpha,
                      halting=HaltingConfig(enabled=False))
    rows = min(batch, student.rows_per_frame(board, xq.shape[1], dt, classes))
    setup = student.setup_for(spec, cfg, rows, n, dt, lo, step)
    _, plan = student.configure(client, board, setup)
    student.set_params(client, board, init_params)
    t = np.asarray(teacher, np.float32)
    total = samples = 0
    counted = False
    for b0 in range(0, n, batch):
        ids = np.arange(b0, min(n, b0 + batch))
        for i in range(0, len(ids), rows):
            part = ids[i:i + rows]
            flags = (m.STEP_BEGIN if i == 0 else 0) | (m.STEP_END if i + rows >= len(ids) else 0)
            r = student.step(client, m.StepFrame(flags, dt, len(ids), 0.01, part,
                                                 np.asarray(y)[part], xq[part], t[part]))
            total += r.instructions
            counted = r.counted
            samples += len(part)
    return {"optimizer": optimizer, "batch": batch, "samples": samples, "counted": counted,
            "arena_bytes": plan["arena"], "frame_buffer_bytes": plan["frame_buffers"],
            "instructions_per_sample": total / samples if counted and samples else None}
