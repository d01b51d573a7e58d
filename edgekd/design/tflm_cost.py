"""Predicted size of a student exported for TFLM: the .tflite flatbuffer (flash) and the
tensor arena (RAM), from the spec alone, so the designer can size students for a board.

The ops are those `edgekd export` writes: the layers' plans strung into an OpChain
(edgekd/nn/plan.py), the exporter's own walk. Each part is costed:

  model bytes = weights (int8: 1 per kernel weight, 4 per int32 bias; float32: 4 each),
                each constant buffer padded to 16 bytes
              + 24 per int8 output channel (weight and bias scales and zero points)
              + per tensor, per op and fixed flatbuffer overhead (fitted, see below);
  arena bytes = the activations alive at once: max over ops of its input + output
                (each 16-byte aligned; int8 MEAN adds an int32 scratch per channel),
                or the room TFLM needs while preparing ops, whichever is larger
              + TFLM's persistent records: 24 per tensor (TfLiteEvalTensor), 64 per op
                (node and registration), op data, 8 per int8 output channel
                (requantization multiplier and shift), fixed overhead.

The overheads were fitted to what `edgekd export` writes and the smallest arena the TFLM
interpreter (tflite-micro's Python runtime) accepts over a spread of MLP, conv1d and
conv2d students; tests/test_export_design.py checks that predictions stay within 20% of
measurements on other students.
"""

from dataclasses import dataclass
from math import prod

from ..nn.plan import CONV_2D, FULLY_CONNECTED, MEAN, RESHAPE, chain
from ..nn.spec import plan_layers

CONSTS = {FULLY_CONNECTED: 2, CONV_2D: 2, MEAN: 1, RESHAPE: 1}   # weights + bias, axes, shape


@dataclass(frozen=True)
class TflmOp:
    kind: str
    in_elems: int
    out_elems: int
    consts: int = 0        # constant input tensors (weights, bias, shape, axes)
    channels: int = 0      # output channels of a FULLY_CONNECTED / CONV_2D
    weights: int = 0       # kernel elements


def lowered_ops(spec):
    """The TFLite ops `edgekd export` emits for `spec` (logits out), in order."""
    plans = plan_layers(spec)
    ops = chain(spec["input_shape"], plans, (1,) + tuple(plans[-1].out_shape)).ops
    return [TflmOp(op.kind, prod(op.in_shape), prod(op.out_shape), CONSTS.get(op.kind, 0),
                   op.channels, op.weight_elems) for op in ops]


@dataclass(frozen=True)
class Overheads:
    """Fitted bytes (see the module docstring), per format."""
    tensor: int            # flatbuffer bytes per tensor (table, shape, name, quantization)
    op: int                # flatbuffer bytes per operator (table and options)
    model: int             # flatbuffer bytes of the model's fixed parts
    prepare: int           # arena room needed while preparing ops: fixed ...
    prepare_tensor: int    # ... plus this per activation tensor ...
    prepare_channel: int   # ... plus this per channel of the widest layer
    fully_connected: int   # arena op data per FULLY_CONNECTED
    conv: int              # arena op data per CONV_2D
    other_op: int          # arena op data per other op
    arena: int             # arena bytes of the interpreter's fixed parts


FLOAT32 = Overheads(76, 60, 180, 416, 48, 0, 76, 280, 84, 684)
INT8 = Overheads(112, 60, 196, 128, 96, 6, 16, 132, 24, 928)


@dataclass(frozen=True)
class TflmCost:
    model_bytes: int
    arena_bytes: int


def _pad16(n):
    return -(-n // 16) * 16


def tflm_cost(spec, int8=True):
    """Predicted .tflite size and TFLM arena of `spec` exported as int8 or float32."""
    ops, o = lowered_ops(spec), INT8 if int8 else FLOAT32
    elem = 1 if int8 else 4
    channels = sum(op.channels for op in ops)
    tensors = len(ops) + 1 + sum(op.consts for op in ops)
    data = sum(_pad16(op.weights * elem) + _pad16(op.channels * 4) if op.channels
               else 16 * op.consts for op in ops)
    model = (data + (24 * channels if int8 else 0)
             + o.tensor * tensors + o.op * len(ops) + o.model)

    def live(op):   # activations alive while `op` runs
        scratch = _pad16(4 * op.out_elems) if int8 and op.kind == "MEAN" else 0
        return _pad16(op.in_elems * elem) + _pad16(op.out_elems * elem) + scratch

    prepare = (o.prepare + o.prepare_tensor * (len(ops) + 1)
               + o.prepare_channel * max([op.channels for op in ops] + [0]))
    op_data = sum(o.fully_connected if op.kind == "FULLY_CONNECTED" else
                  o.conv if op.kind == "CONV_2D" else o.other_op for op in ops)
    arena = (max(max(live(op) for op in ops), prepare) + 24 * tensors + 64 * len(ops)
             + (8 * channels if int8 else 0) + op_data + o.arena)
    return TflmCost(int(model), int(arena))
