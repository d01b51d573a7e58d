"""`export_tflite`: an edgekd model to a .tflite file that TFLM runs, float32 or int8."""

from ..fileio import atomic_path
from . import flatbuffer
from .lower import lower
from .quantize import quantize
from .tflm import arena_size


def build_tflite(model, int8=False, calib_x=None, softmax=False):
    """(.tflite bytes, info) for `model`; see `export_tflite` for info."""
    graph = lower(model, softmax=softmax)
    if int8:
        graph = quantize(graph, calib_x)
    data = flatbuffer.build(graph)
    return data, describe(graph, data, arena_size(data))


def export_tflite(model, path, int8=False, calib_x=None, softmax=False):
    """Write `model` to `path` as .tflite, atomically (nothing is written on failure).

    int8: full-integer quantization calibrated on `calib_x` [N, *input shape]; softmax: end
    with a SOFTMAX op (probabilities instead of logits). Returns info: model_bytes,
    arena_bytes (the smallest tensor arena TFLM accepts), int8, input and output {shape,
    dtype, scale, zero_point} and the ops in order."""
    data, info = build_tflite(model, int8, calib_x, softmax)
    write_tflite(data, path)
    return {**info, "path": str(path)}


def write_tflite(data, path):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def describe(graph, data, arena):
    def tensor(i):
        scale, zp = graph.quant[i] if graph.int8 else (None, None)
        return {"shape": list(graph.shapes[i]), "dtype": "int8" if graph.int8 else "float32",
                "scale": scale, "zero_point": zp}
    return {"model_bytes": len(data), "arena_bytes": arena, "int8": graph.int8,
            "input": tensor(0), "output": tensor(len(graph.ops)),
            "ops": graph.op_names()}
