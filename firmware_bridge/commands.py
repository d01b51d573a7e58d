"""The board commands as plain functions of a BoardClient: info, deploy, infer, train_batch,
get_weights, reset. The CLI (`edgekd board ...`) and tests call these; the streaming
last-layer training loop built on train_batch is in train_last.py."""

import contextlib
import hashlib
import zlib

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.export.qmath import quantize as quantize_input
from edgekd.export.tflite_read import require_tflite

from . import ekb
from . import messages as m
from .protocol import BoardClient, BoardError
from .transport import SerialLink


class DoesNotFit(EdgekdError):
    """The model (or what it needs at run time) is larger than the board offers."""


@contextlib.contextmanager
def connect(port, baud=115200, timeout=2.0, retries=4, log=None):
    """A BoardClient on an open serial port, closed on exit."""
    link = SerialLink(port, baud)
    try:
        yield BoardClient(link, timeout=timeout, retries=retries, log=log)
    finally:
        link.close()


def info(client):
    return m.BoardInfo.unpack(client.request(m.INFO))


def model_for_board(board, tflite_bytes, where="model"):
    """The bytes to DEPLOY: the .tflite itself for a board that runs TFLM, the EKB int8 blob
    for the reference C firmware."""
    if board.format == m.FORMAT_TFLITE:
        require_tflite(tflite_bytes, where)
        return bytes(tflite_bytes)
    if board.format == m.FORMAT_EKB:
        return ekb.from_tflite(tflite_bytes, where)
    raise EdgekdError(f"board {board.name} takes model format {board.format}, unknown here")


def deploy(client, tflite_bytes, where="model", chunk_retries=3, check=True, progress=None):
    """DEPLOY in chunks, each with its CRC-32 (a chunk the board reports damaged after
    writing is resent, at most `chunk_retries` times), then the whole model's SHA-256.
    `check=False` skips the host's own size check, leaving the refusal to the board."""
    board = info(client)
    blob = model_for_board(board, tflite_bytes, where)
    if check and len(blob) > board.max_model:
        raise DoesNotFit(f"{where}: {len(blob):,} bytes do not fit board {board.name}'s "
                         f"{board.max_model:,}-byte model space")
    sha = hashlib.sha256(blob).digest()
    (max_chunk,) = m.U32.unpack(client.request(m.DEPLOY_BEGIN, m.DEPLOY_BEGIN_S.pack(
        len(blob), board.format, sha)))
    size = max(1, min(max_chunk, board.max_payload - m.SEQ.size - m.CHUNK_HEAD.size))
    resent = chunks = 0
    for off in range(0, len(blob), size):
        data = blob[off:off + size]
        body = m.CHUNK_HEAD.pack(off, zlib.crc32(data)) + data
        for attempt in range(chunk_retries + 1):
            try:
                client.request(m.DEPLOY_CHUNK, body)
                break
            except BoardError as e:
                if e.code != m.E_CHUNK_CRC or attempt == chunk_retries:
                    raise
                resent += 1
        chunks += 1
        if progress:
            progress(min(off + size, len(blob)), len(blob))
    # the board hashes and loads the model: allow it a moment more than a plain request
    arena_used, model_bytes = m.U32X2.unpack(client.request(m.DEPLOY_END, timeout=max(
        client.timeout, 2.0)))
    return {"board": board.name, "format": m.FORMAT_NAMES[board.format],
            "model_bytes": model_bytes, "sha256": sha.hex(), "chunks": chunks,
            "chunks_resent": resent, "arena_used": arena_used, "arena_bytes": board.arena}


def require_model(board):
    if not board.has_model:
        raise EdgekdError(f"board {board.name} has no model: `edgekd board deploy` one first")


def encode_inputs(board, x):
    """(dtype code, rows) as the board's model takes them: int8 quantized by the host with
    the model's input scale and zero point (TFLM's QUANTIZE), or float32."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    if x.shape[1] != board.in_features:
        raise EdgekdError(f"inputs have {x.shape[1]} features; the model on board "
                          f"{board.name} takes {board.in_features}")
    if board.in_dtype == m.DT_I8:
        return m.DT_I8, quantize_input(x, board.in_scale, board.in_zero_point)
    return m.DT_F32, x


def rows_per_frame(board, request_row, reply_row, request_fixed, reply_fixed, cap=255):
    room = board.max_payload - m.SEQ.size
    n = min((room - request_fixed) // request_row, (room - reply_fixed) // reply_row, cap)
    if n < 1:
        raise EdgekdError(f"board {board.name}'s frames ({board.max_payload} bytes) cannot "
                          f"carry one sample")
    return n


def infer(client, x, board=None):
    """Outputs [n, C] as float32 (int8 outputs dequantized) and the raw int8 outputs (None
    when the board answered float, e.g. after TRAIN_LAST)."""
    board = board or info(client)
    require_model(board)
    dt, rows = encode_inputs(board, x)
    n = rows_per_frame(board, rows.itemsize * rows.shape[1], 4 * board.out_features,
                       m.INFER_HEAD.size, m.INFER_REPLY_HEAD.size)
    outs, raws = [], []
    for i in range(0, len(rows), n):
        body = client.request(m.INFER, m.pack_infer(dt, rows[i:i + n]))
        y, raw = m.unpack_infer_reply(body)
        if y.shape != (len(rows[i:i + n]), board.out_features):
            raise EdgekdError(f"board answered INFER with {y.shape} outputs for "
                              f"{len(rows[i:i + n])} samples")
        outs.append(y)
        raws.append(raw)
    y = np.concatenate(outs) if outs else np.zeros((0, board.out_features), np.float32)
    raw = None if any(r is None for r in raws) or not raws else np.concatenate(raws)
    return y, raw


def train_batch(client, board, x_rows, dtype, labels, teacher, lr, temperature, alpha):
    """One TRAIN_LAST request: (loss before the step, kl [n], agree [n])."""
    body = m.pack_train(m.TrainBatch(lr, temperature, alpha, dtype,
                                     np.asarray(labels, np.uint16), x_rows,
                                     np.asarray(teacher, np.float32)))
    loss, kl, agree = m.unpack_train_reply(client.request(m.TRAIN_LAST, body))
    if len(kl) != len(labels):
        raise EdgekdError(f"board answered TRAIN_LAST for {len(kl)} samples, sent {len(labels)}")
    return loss, kl, agree


def get_weights(client, board=None):
    """The trainable last layer as float32: W [out, in], b [out]."""
    board = board or info(client)
    require_model(board)
    data, off, total = bytearray(), 0, None
    want = board.max_payload - m.SEQ.size - m.WEIGHTS_REPLY_HEAD.size
    while total is None or off < total:
        body = client.request(m.GET_WEIGHTS, m.WEIGHTS_REQ.pack(off, min(want, 0xFFFF)))
        f_in, f_out, total, r_off = m.WEIGHTS_REPLY_HEAD.unpack_from(body)
        chunk = body[m.WEIGHTS_REPLY_HEAD.size:]
        if r_off != off or total != 4 * (f_in * f_out + f_out) or (not chunk and off < total):
            raise EdgekdError("board sent an inconsistent GET_WEIGHTS reply")
        data += chunk
        off += len(chunk)
    flat = np.frombuffer(bytes(data[:total]), "<f4").astype(np.float32)
    return flat[:f_in * f_out].reshape(f_out, f_in), flat[f_in * f_out:]


def set_weights(client, w, b, board=None):
    """Write the trainable last layer (W [out, in], b [out], float32) back to the board, in
    chunks that fit its frames; the board refuses NaN/inf and sizes that do not match."""
    board = board or info(client)
    require_model(board)
    data = np.concatenate([np.asarray(w, "<f4").ravel(), np.asarray(b, "<f4")]).tobytes()
    room = (board.max_payload - m.SEQ.size - m.U32.size) // 4 * 4
    for off in range(0, len(data), room):
        client.request(m.SET_WEIGHTS, m.U32.pack(off) + data[off:off + room])


def bench(client, x_row, n, board=None):
    """BENCH: the board runs n inferences of one input row and counts with its own counter.
    Returns (ticks, counted): counted is False when the board cannot count (then ticks is 0).
    """
    board = board or info(client)
    require_model(board)
    _, rows = encode_inputs(board, np.asarray(x_row)[None])
    if rows.dtype != np.int8:
        raise EdgekdError(f"board {board.name}'s model takes float inputs; BENCH sends int8")
    body = client.request(m.BENCH, m.BENCH_HEAD.pack(n) + rows.tobytes(), timeout=max(
        client.timeout, 30.0))
    ticks, got, counted = m.BENCH_REPLY.unpack(body)
    if got != n:
        raise EdgekdError(f"board answered BENCH for {got} runs, asked {n}")
    return ticks, bool(counted)


def reset(client, erase=False):
    """Restore the deployed last layer (discarding TRAIN_LAST's changes); `erase` also
    removes the model."""
    client.request(m.RESET, bytes([1 if erase else 0]))
