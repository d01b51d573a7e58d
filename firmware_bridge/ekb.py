"""EKB: the compact int8 model the C firmware runs, derived by the host from an exported
int8 .tflite so the firmware need not parse flatbuffers. It holds a chain of layers (dense;
for conv1d students also conv1d as TFLM's height-1 CONV_2D, 1-D max / average pools and
MEAN over the length) with TFLM's precomputed requantization constants, so the firmware's
integer arithmetic is TFLM's reference kernels bit for bit. Layout: docs/protocol.md,
section 11.6."""

import struct

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.export.qmath import activation_range, quantize_multiplier
from edgekd.export.tflite_read import read_graph, read_tflite
from edgekd.kernels.activations import CODES as ACTIVATION_CODES
from edgekd.kernels.conv import same_padding

from .last_layer import last_dense

MAGIC = b"EKB1"
HEADER = struct.Struct("<4sBBBxfi")      # magic, layers, in_dtype, out_dtype, in_scale, in_zp
LAYER = struct.Struct("<HHBB2xiiiiff")   # in, out, act, kind, in_zp, out_zp, act_min, act_max, in_scale, out_scale
GEOMETRY = struct.Struct("<HHHHHHH2x")   # length in, channels in, kernel, stride, pad, length out, channels out
ACT_CODES = {k: v for k, v in ACTIVATION_CODES.items() if k != "tanh"}  # int8: no TANH yet
DENSE, CONV1D, MAXPOOL1D, AVGPOOL1D, MEAN = range(5)
_SPATIAL = ("CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN")
DT_F32, DT_I8 = 0, 1
MAX_LAYERS = 16


def from_tflite(data, where="model"):
    """EKB bytes for an int8 dense model; EdgekdError naming what the firmware cannot run."""
    g = read_tflite(data, where)
    last_dense(g, where)  # TRAIN_LAST needs a logits layer: refuse early, with its reason
    if any(op.kind in _SPATIAL for op in g.ops):
        return _from_graph(data, where)
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
            raise EdgekdError(f"{where}: the C firmware runs dense, conv1d, 1-D pooling and "
                              f"MEAN layers; this model has a {op.kind} operator")
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
    head = LAYER.pack(inp, out, ACT_CODES[act], DENSE, int(x.zero_point[0]), int(y.zero_point[0]),
                      act_min, act_max, float(x.scale[0]), float(y.scale[0]))
    body = (mult.astype("<i4").tobytes() + shift.astype("<i4").tobytes()
            + wscale.astype("<f4").tobytes() + bscale.astype("<f4").tobytes()
            + bias.astype("<i4").tobytes() + w.data.astype(np.int8).tobytes())
    return head + body + b"\0" * (-len(body) % 4)


def _from_graph(data, where):
    """EKB of a conv1d student, read with edgekd's int8 graph reader (the one whose
    reference inference matches TFLM): RESHAPEs vanish (channels-last rows are already
    [length][channels]), every other op becomes one layer."""
    try:
        g = read_graph(data)
    except EdgekdError as e:
        raise EdgekdError(f"{where}: {e}") from None
    if not g.int8:
        raise EdgekdError(f"{where}: the C firmware runs full-integer int8 models; export "
                          f"with --int8")
    layers = [_graph_layer(g, i, op, where) for i, op in enumerate(g.ops) if op.kind != "RESHAPE"]
    if len(layers) > MAX_LAYERS:
        raise EdgekdError(f"{where}: {len(layers)} layers; EKB holds at most {MAX_LAYERS}")
    in_scale, in_zp = g.quant[0]
    return HEADER.pack(MAGIC, len(layers), DT_I8, DT_I8, float(in_scale), int(in_zp)) + \
        b"".join(layers)


def _graph_layer(g, i, op, where):
    """One EKB layer (head, geometry for a 1-D layer, body) of op number `i` of the graph:
    its quantization is what the graph holds between op i and op i + 1."""
    if op.kind not in ("FULLY_CONNECTED",) + _SPATIAL:
        raise EdgekdError(f"{where}: the C firmware runs dense, conv1d, 1-D pooling and "
                          f"MEAN layers; this model has a {op.kind} operator")
    (in_scale, in_zp), (out_scale, out_zp) = g.quant[i], g.quant[i + 1]
    ishape, oshape = g.shapes[i], g.shapes[i + 1]
    n_in, n_out = int(np.prod(ishape[1:])), int(np.prod(oshape[1:]))
    act = op.act if op.act in ACT_CODES else None
    if act is None:
        raise EdgekdError(f"{where}: fused activation {op.act} is not supported by the C "
                          f"firmware")
    lo, hi = (-128, 127) if op.kind == "MEAN" else activation_range(act, out_scale, out_zp)
    if op.kind == "FULLY_CONNECTED":
        kind, geometry = DENSE, b""
        body = _channels(op, in_scale, out_scale) + op.q_weight.astype(np.int8).tobytes()
    else:
        kind, geometry, body = _spatial_layer(op, ishape, oshape, in_scale, out_scale, where)
    if n_in > 0xFFFF or n_out > 0xFFFF:
        raise EdgekdError(f"{where}: a layer has more than 65,535 values per sample")
    head = LAYER.pack(n_in, n_out, ACT_CODES[act], kind, int(in_zp), int(out_zp), lo, hi,
                      float(in_scale), float(out_scale))
    return head + geometry + body + b"\0" * (-len(body) % 4)


def _spatial_layer(op, ishape, oshape, in_scale, out_scale, where):
    """(kind, GEOMETRY bytes, body) of a height-1 CONV_2D, pool or MEAN: the firmware runs
    them along the length of a [1, length, channels] tensor only."""
    if len(ishape) != 4 or ishape[1] != 1 or (len(oshape) == 4 and oshape[1] != 1):
        raise EdgekdError(f"{where}: the C firmware runs 1-D (height-1) {op.kind} "
                          f"only; this one has input shape {list(ishape[1:])}")
    length, ch = ishape[2], ishape[3]
    if op.kind == "MEAN":
        if tuple(op.axes) != (1, 2):
            raise EdgekdError(f"{where}: MEAN over axes {op.axes}; the C firmware "
                              f"averages over the length only")
        kind, k, stride, pad, l_out, c_out = MEAN, 1, 1, 0, 1, ch
        body = _mean_multiplier(length, in_scale, out_scale)
    elif op.kind == "CONV_2D":
        c_out, kh, k, _ = op.q_weight.shape
        if kh != 1 or op.stride[0] != 1:
            raise EdgekdError(f"{where}: the C firmware runs height-1 convolutions only")
        kind, stride = CONV1D, op.stride[1]
        pad = same_padding(length, k, stride)[0] if op.padding == "SAME" else 0
        l_out = oshape[2]
        body = _channels(op, in_scale, out_scale) + op.q_weight.astype(np.int8).tobytes()
    else:
        kind = MAXPOOL1D if op.kind == "MAX_POOL_2D" else AVGPOOL1D
        if op.pool[0] != 1 or op.stride[0] != 1:
            raise EdgekdError(f"{where}: the C firmware pools along the length only")
        k, stride, pad, l_out, c_out, body = op.pool[1], op.stride[1], 0, oshape[2], ch, b""
    return kind, GEOMETRY.pack(length, ch, k, stride, pad, l_out, c_out), body


def _mean_multiplier(n, in_scale, out_scale):
    """MEAN's body: (multiplier, shift) of in_scale / out_scale with the division by the
    length `n` folded in, the multiplier shifted left first (as far as n's bits and the
    shift's range allow) so the integer division keeps its precision."""
    mult, shift = quantize_multiplier(np.float64(np.float32(in_scale))
                                      / np.float64(np.float32(out_scale)))
    sh = min(n.bit_length() - 1, 32, 31 + shift)
    mult, shift = (mult << sh) // n, shift - sh
    return struct.pack("<ii", mult, shift)


def _channels(op, in_scale, out_scale):
    """multiplier, shift, w_scale, bias_scale, bias: per output channel, as TFLM prepares."""
    wscale = np.asarray(op.w_scale, np.float32)
    mult, shift = _multipliers(np.float32(in_scale), wscale, np.float32(out_scale))
    bias = (np.zeros(len(wscale), np.int32) if op.q_bias is None else op.q_bias.astype(np.int32))
    bscale = (wscale * np.float32(in_scale)).astype(np.float32)
    return (mult.astype("<i4").tobytes() + shift.astype("<i4").tobytes()
            + wscale.astype("<f4").tobytes() + bscale.astype("<f4").tobytes()
            + bias.astype("<i4").tobytes())


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
        inp, out, _act, kind = LAYER.unpack_from(blob, off)[:4]
        widths.append((inp, out))
        off += LAYER.size
        if kind == DENSE:
            body = 20 * out + inp * out
        else:
            if off + GEOMETRY.size > len(blob):
                raise EdgekdError("EKB model is truncated")
            _l, c_in, k, _s, _p, _lo, c_out = GEOMETRY.unpack_from(blob, off)
            off += GEOMETRY.size
            body = {CONV1D: 20 * c_out + c_out * k * c_in, MEAN: 8}.get(kind, 0)
        off += body + (-body % 4)
    if off != len(blob):
        raise EdgekdError(f"EKB model has {len(blob) - off} bytes more than its layers")
    return widths, in_dt, out_dt
