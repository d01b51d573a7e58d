"""Serialise an export Graph to .tflite bytes with the schema and model editor that
tflite-micro ships (no hand-made flatbuffer bytes), then let its flatbuffer aligner place
every buffer on a 16-byte boundary, as TFLite's converter does, so SIMD kernels and
float loads on a Cortex-M read them directly from flash."""

import os
import tempfile

import numpy as np

from . import deps
from .graph import CONV_2D, FULLY_CONNECTED, MEAN, POOLS, RESHAPE, SOFTMAX
from .quantize import bias_scales

DESCRIPTION = "edgekd export"


def build(graph):
    """The .tflite bytes of `graph` (float32, or int8 when it carries quantization)."""
    fb, me = deps.schema(), deps.model_editor()
    w = _Writer(fb, me, graph)
    model = me.Model(description=DESCRIPTION)
    sg = model.add_subgraph(name="main")
    acts = [w.activation(i) for i in range(len(graph.ops) + 1)]
    for i, op in enumerate(graph.ops):
        inputs, options = w.operator(i, op, acts[i])
        op_t = fb.OperatorT()          # carries the builtin options the editor leaves to us
        if options is not None:
            op_t.builtinOptionsType, op_t.builtinOptions = options
        sg.add_operator(opcode=getattr(fb.BuiltinOperator, op.kind), inputs=inputs,
                        outputs=[acts[i + 1]], _fb=op_t)
    sg.inputs, sg.outputs = [acts[0]], [acts[-1]]
    return _aligned(bytes(model.build()))


def _aligned(data):
    align = deps.tflm("tensorflow.lite.micro.tools.tflite_flatbuffer_align_wrapper")
    with tempfile.TemporaryDirectory(prefix="edgekd-tflite-") as d:
        src, dst = os.path.join(d, "in.tflite"), os.path.join(d, "out.tflite")
        with open(src, "wb") as f:
            f.write(data)
        align.align_tflite_model(src, dst)
        with open(dst, "rb") as f:
            return f.read()


class _Writer:
    def __init__(self, fb, me, graph):
        self.fb, self.me, self.graph = fb, me, graph
        self.act_type = fb.TensorType.INT8 if graph.int8 else fb.TensorType.FLOAT32
        self.shapes = graph.shapes

    def activation(self, i):
        name = "input" if i == 0 else f"t{i}_{self.graph.ops[i - 1].kind.lower()}"
        q = None
        if self.graph.int8:
            scale, zp = self.graph.quant[i]
            q = self.me.Quantization(scales=[float(scale)], zero_points=[int(zp)])
        return self.me.Tensor(shape=self.shapes[i], dtype=self.act_type, name=name,
                              quantization=q)

    def const(self, name, array, dtype, scales=None):
        q = None
        if scales is not None:   # per output channel (axis 0), symmetric
            q = self.me.Quantization(scales=[float(s) for s in scales],
                                     zero_points=[0] * len(scales), axis=0)
        return self.me.Tensor(shape=array.shape, dtype=dtype, name=name,
                              data=np.ascontiguousarray(array).tobytes(), quantization=q)

    def weights(self, i, op):
        """(filter, bias) tensors: float32, or int8 per-channel with int32 biases."""
        T, tag = self.fb.TensorType, f"op{i}_{op.kind.lower()}"
        if not self.graph.int8:
            return (self.const(f"{tag}/weights", op.weight.astype("<f4"), T.FLOAT32),
                    self.const(f"{tag}/bias", op.bias.astype("<f4"), T.FLOAT32))
        b_scale = bias_scales(self.graph.quant[i][0], op.w_scale)
        return (self.const(f"{tag}/weights", op.q_weight.astype("i1"), T.INT8, op.w_scale),
                self.const(f"{tag}/bias", op.q_bias.astype("<i4"), T.INT32, b_scale))

    def operator(self, i, op, x):
        """(input tensors, (options type, options) or None) of one op."""
        fb = self.fb
        act = getattr(fb.ActivationFunctionType, op.act.upper())
        if op.kind == FULLY_CONNECTED:
            o = fb.FullyConnectedOptionsT()
            o.fusedActivationFunction = act
            return [x, *self.weights(i, op)], (fb.BuiltinOptions.FullyConnectedOptions, o)
        if op.kind == CONV_2D:
            o = fb.Conv2DOptionsT()
            o.padding = getattr(fb.Padding, op.padding)
            o.strideH, o.strideW = op.stride
            o.dilationHFactor = o.dilationWFactor = 1
            o.fusedActivationFunction = act
            return [x, *self.weights(i, op)], (fb.BuiltinOptions.Conv2DOptions, o)
        if op.kind in POOLS:
            o = fb.Pool2DOptionsT()
            o.padding = fb.Padding.VALID
            o.strideH, o.strideW = op.stride
            o.filterHeight, o.filterWidth = op.pool
            o.fusedActivationFunction = act
            return [x], (fb.BuiltinOptions.Pool2DOptions, o)
        if op.kind == MEAN:
            o = fb.ReducerOptionsT()
            o.keepDims = False
            axes = self.const(f"op{i}_mean/axes", np.array(op.axes, "<i4"),
                              fb.TensorType.INT32)
            return [x, axes], (fb.BuiltinOptions.ReducerOptions, o)
        if op.kind == RESHAPE:
            o = fb.ReshapeOptionsT()
            o.newShape = list(op.out_shape)
            shape = self.const(f"op{i}_reshape/shape", np.array(op.out_shape, "<i4"),
                               fb.TensorType.INT32)
            return [x, shape], (fb.BuiltinOptions.ReshapeOptions, o)
        if op.kind == SOFTMAX:
            o = fb.SoftmaxOptionsT()
            o.beta = 1.0
            return [x], (fb.BuiltinOptions.SoftmaxOptions, o)
        return [x], None     # TANH

