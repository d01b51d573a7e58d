"""Read .tflite bytes back into an export Graph (see graph.py), so the int8 reference and
the tests work from what was actually written. Reads the chains edgekd writes: one
subgraph, each op consuming the previous op's output, the ops of graph.OPS only."""

import numpy as np

from ..errors import EdgekdError
from . import deps
from .graph import CONV_2D, FULLY_CONNECTED, MEAN, OPS, POOLS, SOFTMAX, Graph, Op


def require_tflite(model_bytes, where="model"):
    """A one-line refusal of bytes that are not a TFLite flatbuffer at all."""
    if len(model_bytes) < 8 or bytes(model_bytes[4:8]) != b"TFL3":
        raise EdgekdError(f"{where}: not a TFLite flatbuffer (no TFL3 identifier)")


def read_graph(model_bytes):
    """The Graph held in .tflite bytes; one-line EdgekdError for anything else."""
    fb = deps.schema()
    try:
        m = fb.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    except Exception:   # noqa: BLE001 - any parse failure means "not a .tflite"
        raise EdgekdError("not a readable .tflite model") from None
    if not m.subgraphs or len(m.subgraphs) != 1:
        raise EdgekdError("expected a .tflite model with one subgraph")
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    r = _Reader(fb, m, m.subgraphs[0])
    sg = r.sg
    if len(sg.inputs) != 1 or len(sg.outputs) != 1:
        raise EdgekdError("expected a .tflite model with one input and one output")
    current = sg.inputs[0]
    graph = Graph(r.shape(current), [], [r.quant(current)])
    for k, o in enumerate(sg.operators or []):
        code = m.operatorCodes[o.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        if kind not in OPS:
            raise EdgekdError(f"op {k} is {kind}, which edgekd's reference does not run")
        if o.inputs[0] != current:
            raise EdgekdError(f"op {k} does not read the previous op's output: not a chain")
        current = o.outputs[0]
        graph.ops.append(r.op(kind, o, current))
        graph.quant.append(r.quant(current))
    if current != sg.outputs[0]:
        raise EdgekdError("the model's output is not its last op's output")
    if any(q is None for q in graph.quant):
        graph.quant = None
    return graph


class _Reader:
    def __init__(self, fb, model, sg):
        self.fb, self.m, self.sg = fb, model, sg
        a, t = fb.ActivationFunctionType, fb.TensorType
        self.acts = {a.NONE: "none", a.RELU: "relu", a.RELU6: "relu6"}
        self.numpy = {t.FLOAT32: "<f4", t.INT32: "<i4", t.INT8: "i1"}

    def tensor(self, i):
        return self.sg.tensors[i]

    def shape(self, i):
        return tuple(int(d) for d in self.tensor(i).shape)

    def array(self, i):
        t = self.tensor(i)
        data = self.m.buffers[t.buffer].data
        if data is None:
            raise EdgekdError(f"tensor {t.name!r} has no data")
        if t.type not in self.numpy:
            raise EdgekdError(f"tensor {t.name!r} has a type edgekd's reference does not run")
        return np.frombuffer(bytes(bytearray(data)), self.numpy[t.type]).reshape(self.shape(i))

    def quant(self, i):
        q = self.tensor(i).quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        return float(q.scale[0]), int(q.zeroPoint[0])

    def op(self, kind, o, out):
        opts, shape = o.builtinOptions, self.shape(out)
        act = self.acts.get(getattr(opts, "fusedActivationFunction", 0))
        if act is None:
            raise EdgekdError(f"{kind} has a fused activation edgekd does not run")
        if kind in (FULLY_CONNECTED, CONV_2D):
            return self.weighted(kind, o, shape, act)
        if kind in POOLS:
            if opts.padding != self.fb.Padding.VALID:
                raise EdgekdError(f"{kind} with SAME padding is not supported")
            return Op(kind, shape, act, stride=(opts.strideH, opts.strideW),
                      pool=(opts.filterHeight, opts.filterWidth))
        if kind == MEAN:
            return Op(kind, shape, axes=tuple(int(a) for a in self.array(o.inputs[1])))
        if kind == SOFTMAX and opts.beta != 1.0:
            raise EdgekdError("SOFTMAX with beta other than 1 is not supported")
        return Op(kind, shape)

    def weighted(self, kind, o, shape, act):
        w_t = self.tensor(o.inputs[1])
        w = self.array(o.inputs[1])
        has_bias = len(o.inputs) > 2 and o.inputs[2] >= 0
        b = self.array(o.inputs[2]) if has_bias else np.zeros(len(w), np.int32 if
                                                              w.dtype == np.int8 else np.float32)
        op = Op(kind, shape, act)
        if kind == CONV_2D:
            opts = o.builtinOptions
            if (opts.dilationHFactor, opts.dilationWFactor) not in ((1, 1), (0, 0)):
                raise EdgekdError("dilated CONV_2D is not supported")
            op.stride = (opts.strideH, opts.strideW)
            op.padding = "SAME" if opts.padding == self.fb.Padding.SAME else "VALID"
        if w.dtype == np.int8:
            q = w_t.quantization
            if q is None or any(int(z) != 0 for z in q.zeroPoint):
                raise EdgekdError(f"{kind} weights must be symmetric int8 (zero point 0)")
            op.q_weight, op.q_bias = w, b.astype(np.int32)
            op.w_scale = np.broadcast_to(np.asarray(q.scale, np.float32), (len(w),)).copy()
        else:
            op.weight, op.bias = w.astype(np.float32), b.astype(np.float32)
        return op
