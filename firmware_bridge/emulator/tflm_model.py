"""A deployed .tflite in the TFLM interpreter, within a fixed arena. The loader adds the
last dense layer's input to the model's outputs, so one invoke yields both the outputs and
the features TRAIN_LAST trains on (TFLM keeps output tensors alive; the arena grows by at
most that tensor). Reading, the interpreter and the arena search (in forked children, as
TFLM's Python interpreter crashes the process when its arena is too small) are
edgekd.export's; the board reports its arena in 16-byte steps, as firmware plans it."""

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.export import deps
from edgekd.export.tflite_read import read_tflite
from edgekd.export.tflm import interpreter, smallest_arena, tensor_quant

from ..last_layer import last_dense
from .head import FloatHead

ARENA_STEP = 16
SEARCH_LIMIT = 1 << 28


class ArenaTooSmall(EdgekdError):
    pass


def with_feature_output(model_bytes, tensor_index):
    """The model with `tensor_index` appended to its outputs."""
    import flatbuffers
    schema = deps.schema()
    mt = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    sub = mt.subgraphs[0]
    sub.outputs = [int(i) for i in sub.outputs] + [int(tensor_index)]
    b = flatbuffers.Builder(len(model_bytes) + 1024)
    b.Finish(mt.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def arena_needed(model_bytes, limit):
    """Smallest arena, in whole 16-byte steps (or `limit` itself), that runs the model;
    None if `limit` does not."""
    size = smallest_arena(model_bytes, limit)
    return None if size is None else min(-(-size // ARENA_STEP) * ARENA_STEP, limit)


class TflmModel:
    """Runs one sample at a time, as firmware does. `head` is None when the model has no
    dense last layer (it can still INFER, not TRAIN_LAST)."""

    def __init__(self, model_bytes, arena_bytes, where="model"):
        model = read_tflite(model_bytes, where)
        try:
            self.last = last_dense(model, where)
        except EdgekdError:
            self.last = None
        runnable = model_bytes
        if self.last is not None:
            runnable = with_feature_output(model_bytes, self.last.features.index)
        deps.runtime()   # the install hint here, not in a probe
        inp = model.tensors[model.inputs[0]]
        self.in_shape = tuple(inp.shape)
        self.in_dtype = np.dtype(inp.dtype)
        self.arena_used = arena_needed(runnable, arena_bytes)
        if self.arena_used is None:
            big = arena_needed(runnable, SEARCH_LIMIT)
            need = f"needs {big:,} bytes" if big else "cannot be allocated at any size"
            raise ArenaTooSmall(f"the model's tensor arena {need}; this board has "
                                f"{arena_bytes:,}")
        self.interp = interpreter(runnable, arena_bytes)
        d_in = self.interp.get_input_details(0)
        d_out = self.interp.get_output_details(0)
        self.in_quant = tensor_quant(d_in) or (1.0, 0)
        self.out_dtype = np.dtype(d_out["dtype"])
        self.out_quant = tensor_quant(d_out) or (1.0, 0)
        self.in_features = int(np.prod(self.in_shape[1:]))
        self.out_features = int(np.prod(d_out["shape"][1:]))
        self.head = None
        if self.last is not None:
            w, b = self.last.float_params()
            self.head = FloatHead(w, b)
            fq = self.last.features
            self.feat_scale = np.float32(fq.scale[0]) if fq.scale is not None else None
            self.feat_zp = np.float32(fq.zero_point[0]) if fq.scale is not None else None

    def run(self, row):
        """(output row, float features row or None) for one input row of in_features."""
        self.interp.set_input(np.asarray(row, self.in_dtype).reshape(self.in_shape), 0)
        self.interp.invoke()
        out = np.asarray(self.interp.get_output(0)).reshape(-1)
        if self.last is None:
            return out, None
        f = np.asarray(self.interp.get_output(1)).reshape(-1)
        if self.feat_scale is not None and f.dtype != np.float32:
            f = (f.astype(np.float32) - self.feat_zp) * self.feat_scale
        return out, f.astype(np.float32)

