"""A deployed .tflite in the TFLM interpreter, within a fixed arena. The loader adds the
last dense layer's input to the model's outputs, so one invoke yields both the outputs and
the features TRAIN_LAST trains on (TFLM keeps output tensors alive; the arena grows by at
most that tensor). The arena is checked in a forked child first, because TFLM's Python
interpreter crashes the process when its arena is too small."""

import faulthandler
import os

import numpy as np

from edgekd.errors import EdgekdError

from ..tflite_graph import last_dense, read_tflite
from .head import FloatHead


class ArenaTooSmall(EdgekdError):
    pass


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise EdgekdError("the board emulator needs the tflite-micro package "
                          "(pip install 'edgekd[mcu]')") from None
    return runtime


def with_feature_output(model_bytes, tensor_index):
    """The model with `tensor_index` appended to its outputs."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    mt = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    sub = mt.subgraphs[0]
    sub.outputs = [int(i) for i in sub.outputs] + [int(tensor_index)]
    b = flatbuffers.Builder(len(model_bytes) + 1024)
    b.Finish(mt.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _probe(model_bytes, arena, sample):
    """True if TFLM can allocate and invoke the model in `arena` bytes (in a child)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            faulthandler.disable()  # a crash is the expected answer here, not news
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            it = _runtime().Interpreter.from_bytes(model_bytes, arena_size=arena)
            it.set_input(sample, 0)
            it.invoke()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status == 0


def arena_needed(model_bytes, sample, limit):
    """Smallest arena (multiple of 16 bytes) that runs the model, or None if `limit` does
    not."""
    if not _probe(model_bytes, limit, sample):
        return None
    lo, hi = 0, limit
    while hi - lo > 16:
        mid = (lo + hi) // 2 // 16 * 16
        if _probe(model_bytes, mid, sample):
            hi = mid
        else:
            lo = mid
    return hi


class TflmModel:
    """Runs one sample at a time, as firmware does. `head` is None when the model has no
    dense last layer (it can still INFER, not TRAIN_LAST)."""

    def __init__(self, model_bytes, arena_bytes, where="model"):
        graph = read_tflite(model_bytes, where)
        try:
            self.last = last_dense(graph, where)
        except EdgekdError:
            self.last = None
        runnable = model_bytes
        if self.last is not None:
            runnable = with_feature_output(model_bytes, self.last.features.index)
        rt = _runtime()
        inp = graph.tensors[graph.inputs[0]]
        self.in_shape = tuple(inp.shape)
        self.in_dtype = np.dtype(inp.dtype)
        sample = np.zeros(self.in_shape, self.in_dtype)
        self.arena_used = arena_needed(runnable, sample, arena_bytes)
        if self.arena_used is None:
            big = arena_needed(runnable, sample, 1 << 28)
            need = f"needs {big:,} bytes" if big else "cannot be allocated at any size"
            raise ArenaTooSmall(f"the model's tensor arena {need}; this board has "
                                f"{arena_bytes:,}")
        self.interp = rt.Interpreter.from_bytes(runnable, arena_size=arena_bytes)
        d_in = self.interp.get_input_details(0)
        d_out = self.interp.get_output_details(0)
        self.in_quant = _quant(d_in)
        self.out_dtype = np.dtype(d_out["dtype"])
        self.out_quant = _quant(d_out)
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


def _quant(details):
    q = details.get("quantization_parameters", {})
    scales, zps = q.get("scales", []), q.get("zero_points", [])
    if len(scales):
        return float(scales[0]), int(zps[0])
    return 1.0, 0
