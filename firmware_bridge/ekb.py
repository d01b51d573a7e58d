"""EKB: the compact int8 model the C firmware runs, derived by the host from an exported
int8 .tflite so the firmware need not parse flatbuffers. It holds a chain of dense layers
with TFLM's precomputed requantization constants, so the firmware's integer arithmetic is
TFLM's reference FULLY_CONNECTED bit for bit. Layout: docs/protocol.md, section 11.6."""

import struct

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.export.qmath import activation_range, quantize_multiplier

from .tflite_graph import last_dense, read_tflite

MAGIC = b"EKB1"
HEADER = struct.Struct("<4sBBBxfi")      # magic, layers, in_dtype, out_dtype, in_scale, in_zp
LAYER = struct.Struct("<HHB3xiiiiff")    # in, out, act, in_zp, out_zp, act_min, act_max, in_scale, out_scale
ACT_CODES = {"none": 0, "relu": 1, "relu6": 2}
DT_F32, DT_I8 = 0, 1
MAX_LAYERS = 16


def from_tflite(data, where="model"):
    """EKB bytes for an int8 dense model; EdgekdError naming what the firmware cannot run."""
    g = read_tflite(data, where)
    last_dense(g, where)  # TRAIN_LAST needs a logits layer: refuse early, with its reason
    ops = list(g.ops)
    in_dtype = out_dtype = DT_I8
    if ops and ops[0].kind == "QUANTIZE" and g.tensors[ops[0].inputs[0]].dtype == np.float32:
        in_dtype = DT_F32
        ops = ops[1:]
    if ops and ops[-1].kind == "DEQUANTIZE":
        out_dtype = DT_F32
        ops = ops[:-1]
    layers, dense, alias = [], [], {}
    for op in ops:
        if op.kind == "RESHAPE":
            alias[op.outputs[0]] = alias.get(op.inputs[0], op.inputs[0])
            continue
        if op.kind != "FULLY_CONNECTED":
            raise EdgekdError(f"{where}: the C firmware runs dense (MLP) models only; this one "
                              f"has a {op.kind} operator")
        if dense and alias.get(op.inputs[0], op.inputs[0]) != dense[-1].outputs[0]:
            raise EdgekdError(f"{where}: the dense layers do not form a chain")
        dense.append(op)
        layers.append(_layer(g, op, where))
    if not layers:
        raise EdgekdError(f"{where}: no dense layer to run")
    if len(layers) > MAX_LAYERS:
        raise EdgekdError(f"{where}: {len(layers)} dense layers; EKB holds at most {MAX_LAYERS}")
    first = g.tensors[dense[0].inputs[0]]
    blob = HEADER.pack(MAGIC, len(layers), in_dtype, out_dtype, float(first.scale[0]),
                       int(first.zero_point[0]))
    return blob + b"".join(layers)


def _layer(g, op, where):
    x, w = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    y = g.tensors[op.outputs[0]]
    b = g.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    if not (x.dtype == w.dtype == y.dtype == np.int8) or w.data is None or \
            (b is not None and (b.dtype != np.int32 or b.data is None)):
        raise EdgekdError(f"{where}: the C firmware runs full-integer int8 models (int8 "
                          f"activations and weights, int32 biases); export with --int8")
    if x.scale is None or y.scale is None or w.scale is None:
        raise EdgekdError(f"{where}: a dense layer lacks quantization parameters")
    if np.any(w.zero_point != 0):
        raise EdgekdError(f"{where}: dense weights must be symmetric (zero point 0)")
    out, inp = w.shape
    wscale = np.broadcast_to(w.scale, (out,)).astype(np.float32)
    bscale = wscale * x.scale[0] if b is None or b.scale is None else \
        np.broadcast_to(b.scale, (out,)).astype(np.float32)
    bias = np.zeros(out, np.int32) if b is None else b.data.astype(np.int32)
    act = op.options.get("activation", "none")
    if act not in ACT_CODES:
        raise EdgekdError(f"{where}: fused activation {act} is not supported by the C firmware")
    act_min, act_max = activation_range(act, y.scale[0], int(y.zero_point[0]))
    mult, shift = _multipliers(x.scale[0], wscale, y.scale[0])
    head = LAYER.pack(inp, out, ACT_CODES[act], int(x.zero_point[0]), int(y.zero_point[0]),
                      act_min, act_max, float(x.scale[0]), float(y.scale[0]))
    body = (mult.astype("<i4").tobytes() + shift.astype("<i4").tobytes()
            + wscale.astype("<f4").tobytes() + bscale.astype("<f4").tobytes()
            + bias.astype("<i4").tobytes() + w.data.astype(np.int8).tobytes())
    return head + body + b"\0" * (-len(body) % 4)


def _multipliers(in_scale, w_scales, out_scale):
    """Per output channel, TFLM's Prepare: QuantizeMultiplier of in_scale * w_scale /
    out_scale computed in double, in that order."""
    pairs = [quantize_multiplier(float(in_scale) * float(ws) / float(out_scale))
             for ws in w_scales]
    if any(not -31 <= s <= 30 for _, s in pairs):
        raise EdgekdError("a requantization multiplier is out of TFLM's range")
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64))


def describe(blob):
    """(layer widths, in dtype, out dtype) of an EKB blob, checking its structure."""
    if len(blob) < HEADER.size or blob[:4] != MAGIC:
        raise EdgekdError("not an EKB model (no EKB1 magic)")
    _, n, in_dt, out_dt, _, _ = HEADER.unpack_from(blob)
    off, widths = HEADER.size, []
    for _ in range(n):
        if off + LAYER.size > len(blob):
            raise EdgekdError("EKB model is truncated")
        inp, out = LAYER.unpack_from(blob, off)[:2]
        widths.append((inp, out))
        body = 20 * out + inp * out
        off += LAYER.size + body + (-body % 4)
    if off != len(blob):
        raise EdgekdError(f"EKB model has {len(blob) - off} bytes more than its layers")
    return widths, in_dt, out_dt
