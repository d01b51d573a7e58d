"""A .tflite flatbuffer read into plain Python: tensors (shape, dtype, quantization, constant
data) and operators in execution order. Uses the schema that the tflite-micro package
ships; both the emulator (to find the trainable last layer) and the int8-blob converter
(ekb.py) read models through here."""

from dataclasses import dataclass, field

import numpy as np

from edgekd.errors import EdgekdError

_DTYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}
ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple
    dtype: type
    scale: np.ndarray | None = None       # float32 [1] or [channels]; None: not quantized
    zero_point: np.ndarray | None = None  # int64, same length as scale
    data: np.ndarray | None = None        # constant tensors (weights, biases)

    @property
    def size(self):
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class Op:
    kind: str                  # builtin operator name, e.g. "FULLY_CONNECTED"
    inputs: list
    outputs: list
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list
    ops: list
    inputs: list
    outputs: list

    def producer(self, tensor_index):
        for op in self.ops:
            if tensor_index in op.outputs:
                return op
        return None


def _schema():
    try:
        from tflite_micro.tensorflow.lite.micro.python import (
            schema_py_generated as schema,
        )
    except ImportError:
        raise EdgekdError("reading .tflite models needs the tflite-micro package "
                          "(pip install 'edgekd[mcu]')") from None
    return schema


def _op_names(schema):
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def read_tflite(data, where="model"):
    """Parse a .tflite model's first subgraph. EdgekdError if it is not a readable model."""
    schema = _schema()
    data = bytes(data)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise EdgekdError(f"{where}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
        sub = model.subgraphs[0]
        names = _op_names(schema)
        tensors = [_tensor(i, t, model.buffers, data) for i, t in enumerate(sub.tensors)]
        ops = []
        for op in sub.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
            opts = {}
            if op.builtinOptions is not None and hasattr(op.builtinOptions, "fusedActivationFunction"):
                opts["activation"] = ACTIVATIONS.get(op.builtinOptions.fusedActivationFunction,
                                                     "unsupported")
            ops.append(Op(kind, [int(i) for i in op.inputs], [int(i) for i in op.outputs], opts))
        return Graph(tensors, ops, [int(i) for i in sub.inputs], [int(i) for i in sub.outputs])
    except EdgekdError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged flatbuffer fails in many ways
        raise EdgekdError(f"{where}: cannot read the TFLite model ({type(e).__name__}: {e})") from None


def _tensor(i, t, buffers, raw):
    dtype = _DTYPES.get(t.type)
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
    return Tensor(i, name, shape, dtype, scale, zp, data)


@dataclass
class LastDense:
    """The model's last FULLY_CONNECTED layer: what TRAIN_LAST trains in float."""
    op: Op
    features: Tensor     # its input: the penultimate activations
    weights: Tensor      # [out, in]
    bias: Tensor | None
    output: Tensor

    def float_params(self):
        """Float32 weights [out, in] and bias [out] as the quantized layer computes them."""
        w = self.weights.data
        if w.dtype == np.float32:
            wf = w.astype(np.float32)
        else:
            wf = w.astype(np.float32) * _per_row(self.weights.scale, w.shape[0])
        out = wf.shape[0]
        if self.bias is None:
            return wf, np.zeros(out, np.float32)
        b = self.bias.data
        if b.dtype == np.float32:
            return wf, b.astype(np.float32)
        bscale = self.bias.scale if self.bias.scale is not None else \
            self.features.scale[0] * self.weights.scale
        return wf, b.astype(np.float32) * _per_row(bscale, out)[:, 0]


def _per_row(scale, rows):
    s = np.asarray(scale, np.float32)
    return (np.full(rows, s[0], np.float32) if s.size == 1 else s)[:, None]


_PASS_THROUGH = ("DEQUANTIZE", "RESHAPE")


def last_dense(graph, where="model"):
    """The FULLY_CONNECTED op whose output is the model's output (through DEQUANTIZE or
    RESHAPE at most); EdgekdError if there is none, or if it is followed by a softmax or has
    a fused activation (its output must be logits)."""
    if len(graph.outputs) != 1:
        raise EdgekdError(f"{where}: has {len(graph.outputs)} outputs; a classifier has one")
    t = graph.outputs[0]
    op = graph.producer(t)
    while op is not None and op.kind in _PASS_THROUGH:
        t = op.inputs[0]
        op = graph.producer(t)
    if op is None or op.kind != "FULLY_CONNECTED":
        kind = "no operator" if op is None else op.kind
        raise EdgekdError(f"{where}: its output comes from {kind}, not from a dense layer: "
                          f"the last layer must be a dense layer emitting logits (export "
                          f"without softmax)")
    if op.options.get("activation", "none") != "none":
        raise EdgekdError(f"{where}: the last dense layer has a fused "
                          f"{op.options['activation']}; it must emit logits")
    w = graph.tensors[op.inputs[1]]
    if w.data is None or len(w.shape) != 2:
        raise EdgekdError(f"{where}: the last dense layer's weights are not a constant matrix")
    bias = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    return LastDense(op, graph.tensors[op.inputs[0]], w, bias, graph.tensors[op.outputs[0]])
