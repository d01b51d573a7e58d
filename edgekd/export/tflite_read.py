"""Read .tflite bytes, with the schema tflite-micro ships: the one reader, for export, the
board emulator and the firmware's model converter alike.

`read_tflite` gives what the file holds (a `TfliteModel`: tensors with their shapes, types,
quantization and constant data, and the operators in execution order), for any model.
`read_graph` gives the export Graph (see graph.py) of the chains edgekd writes, so the int8
reference and the tests work from what was actually written: one subgraph, each op
consuming the previous op's output, the ops of graph.OPS only.
"""

from dataclasses import dataclass, field

import numpy as np

from ..errors import EdgekdError
from . import deps
from .graph import CONV_2D, FULLY_CONNECTED, MEAN, OPS, POOLS, SOFTMAX, Graph, Op

FUSED_NAMES = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH")


def require_tflite(model_bytes, where="model"):
    """A one-line refusal of bytes that are not a TFLite flatbuffer at all."""
    if len(model_bytes) < 8 or bytes(model_bytes[4:8]) != b"TFL3":
        raise EdgekdError(f"{where}: not a TFLite flatbuffer (no TFL3 identifier)")


@dataclass
class TfliteTensor:
    index: int
    name: str
    shape: tuple
    dtype: np.dtype | None                # None: a type edgekd does not read
    scale: np.ndarray | None = None       # float32 [1] or [channels]; None: not quantized
    zero_point: np.ndarray | None = None  # int64, same length as scale
    data: np.ndarray | None = None        # constant tensors (weights, biases, shapes)

    @property
    def size(self):
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def quant(self):
        """(scale, zero_point) of a per-tensor quantized tensor, else None."""
        return None if self.scale is None else (float(self.scale[0]), int(self.zero_point[0]))


@dataclass
class TfliteOperator:
    kind: str                  # builtin operator name, e.g. "FULLY_CONNECTED"
    inputs: list
    outputs: list
    options: dict = field(default_factory=dict)   # "activation": the fused one, by name
    builtin_options: object = None                # the schema's options object


@dataclass
class TfliteModel:
    """The first subgraph of a .tflite file, as the file holds it."""
    tensors: list
    ops: list
    inputs: list
    outputs: list
    subgraphs: int = 1

    def producer(self, tensor_index):
        for op in self.ops:
            if tensor_index in op.outputs:
                return op
        return None


def read_tflite(data, where="model"):
    """The model in .tflite bytes; one-line EdgekdError if it is not a readable model."""
    fb = deps.schema()
    data = bytes(data)
    require_tflite(data, where)
    try:
        return _model(fb, fb.ModelT.InitFromPackedBuf(bytearray(data), 0), data)
    except EdgekdError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged flatbuffer fails in many ways
        raise EdgekdError(f"{where}: cannot read the TFLite model "
                          f"({type(e).__name__}: {e})") from None


def _model(fb, m, raw):
    sub = m.subgraphs[0]
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    acts = {getattr(fb.ActivationFunctionType, k): k.lower() for k in FUSED_NAMES}
    t = fb.TensorType
    dtypes = {t.FLOAT32: "<f4", t.INT32: "<i4", t.UINT8: "u1", t.INT64: "<i8", t.INT16: "<i2",
              t.INT8: "i1"}
    tensors = [_tensor(i, x, m.buffers, raw, dtypes) for i, x in enumerate(sub.tensors or [])]
    ops = []
    for o in sub.operators or []:
        code = m.operatorCodes[o.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        opts = {}
        if o.builtinOptions is not None and hasattr(o.builtinOptions, "fusedActivationFunction"):
            opts["activation"] = acts.get(o.builtinOptions.fusedActivationFunction, "unsupported")
        ops.append(TfliteOperator(kind, [int(i) for i in o.inputs], [int(i) for i in o.outputs],
                                  opts, o.builtinOptions))
    return TfliteModel(tensors, ops, [int(i) for i in sub.inputs], [int(i) for i in sub.outputs],
                       len(m.subgraphs))


def _tensor(i, t, buffers, raw, dtypes):
    dtype = np.dtype(dtypes[t.type]) if t.type in dtypes else None
    shape = tuple(int(s) for s in (t.shape if t.shape is not None else ()))
    name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
    q = t.quantization
    scale = zp = None
    if q is not None and q.scale is not None and len(q.scale):
        scale = np.asarray(q.scale, np.float32)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0] * len(scale), np.int64)
    data = None
    buf = buffers[t.buffer] if t.buffer < len(buffers) else None
    if buf is not None and dtype is not None:
        blob = None
        if buf.data is not None and len(buf.data):
            blob = np.asarray(buf.data, np.uint8).tobytes()
        elif getattr(buf, "offset", 0) and getattr(buf, "size", 0):
            blob = raw[buf.offset:buf.offset + buf.size]
        if blob is not None:
            data = np.frombuffer(blob, dtype).reshape(shape)
    return TfliteTensor(i, name, shape, dtype, scale, zp, data)


# -- the export Graph of a chain ----------------------------------------------------------------

REFERENCE_TYPES = (np.dtype("<f4"), np.dtype("<i4"), np.dtype("i1"))   # what the reference runs


def read_graph(model_bytes):
    """The Graph held in .tflite bytes; one-line EdgekdError for anything else."""
    try:
        m = read_tflite(model_bytes)
    except EdgekdError:
        raise EdgekdError("not a readable .tflite model") from None
    if m.subgraphs != 1:
        raise EdgekdError("expected a .tflite model with one subgraph")
    if len(m.inputs) != 1 or len(m.outputs) != 1:
        raise EdgekdError("expected a .tflite model with one input and one output")
    current = m.inputs[0]
    graph = Graph(m.tensors[current].shape, [], [m.tensors[current].quant])
    for k, o in enumerate(m.ops):
        if o.kind not in OPS:
            raise EdgekdError(f"op {k} is {o.kind}, which edgekd's reference does not run")
        if o.inputs[0] != current:
            raise EdgekdError(f"op {k} does not read the previous op's output: not a chain")
        current = o.outputs[0]
        graph.ops.append(_op(m, o, m.tensors[current].shape))
        graph.quant.append(m.tensors[current].quant)
    if current != m.outputs[0]:
        raise EdgekdError("the model's output is not its last op's output")
    if any(q is None for q in graph.quant):
        graph.quant = None
    return graph


def _array(m, i):
    t = m.tensors[i]
    if t.dtype not in REFERENCE_TYPES:
        raise EdgekdError(f"tensor {t.name!r} has a type edgekd's reference does not run")
    if t.data is None:
        raise EdgekdError(f"tensor {t.name!r} has no data")
    return t.data


def _op(m, o, shape):
    kind, opts = o.kind, o.builtin_options
    act = o.options.get("activation", "none")
    if act not in ("none", "relu", "relu6"):
        raise EdgekdError(f"{kind} has a fused activation edgekd does not run")
    if kind in (FULLY_CONNECTED, CONV_2D):
        return _weighted(m, o, shape, act)
    if kind in POOLS:
        if opts.padding != deps.schema().Padding.VALID:
            raise EdgekdError(f"{kind} with SAME padding is not supported")
        return Op(kind, shape, act, stride=(opts.strideH, opts.strideW),
                  pool=(opts.filterHeight, opts.filterWidth))
    if kind == MEAN:
        return Op(kind, shape, axes=tuple(int(a) for a in _array(m, o.inputs[1])))
    if kind == SOFTMAX and opts.beta != 1.0:
        raise EdgekdError("SOFTMAX with beta other than 1 is not supported")
    return Op(kind, shape)


def _weighted(m, o, shape, act):
    kind, w_t = o.kind, m.tensors[o.inputs[1]]
    w = _array(m, o.inputs[1])
    has_bias = len(o.inputs) > 2 and o.inputs[2] >= 0
    b = _array(m, o.inputs[2]) if has_bias else np.zeros(len(w), np.int32 if
                                                          w.dtype == np.int8 else np.float32)
    op = Op(kind, shape, act)
    if kind == CONV_2D:
        opts = o.builtin_options
        if (opts.dilationHFactor, opts.dilationWFactor) not in ((1, 1), (0, 0)):
            raise EdgekdError("dilated CONV_2D is not supported")
        op.stride = (opts.strideH, opts.strideW)
        op.padding = "SAME" if opts.padding == deps.schema().Padding.SAME else "VALID"
    if w.dtype == np.int8:
        if w_t.scale is None or np.any(w_t.zero_point != 0):
            raise EdgekdError(f"{kind} weights must be symmetric int8 (zero point 0)")
        op.q_weight, op.q_bias = w, b.astype(np.int32)
        op.w_scale = np.broadcast_to(w_t.scale, (len(w),)).copy()
    else:
        op.weight, op.bias = w.astype(np.float32), b.astype(np.float32)
    return op
