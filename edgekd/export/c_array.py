"""A .tflite model as C source for firmware: NAME.h (C99 and C++: sizes, shapes,
quantization, arena size as macros; the array declared) and NAME.cc (the bytes,
alignas(16) so TFLM can read tensors in place from flash)."""

import os
import re

from ..errors import EdgekdError
from ..fileio import atomic_path

PER_LINE = 12


def c_name(path):
    """A C identifier from a file name: 'out/kws-model.h' -> 'kws_model'. The array is
    NAME_tflite, as `xxd -i NAME.tflite` names it, so it cannot clash with TFLM's own
    `model` variables."""
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    name = re.sub(r"\W", "_", stem, flags=re.ASCII)
    if not name or name[0].isdigit():
        name = "model_" + name
    return name


def write_c_array(model_bytes, path, info):
    """Write the header `path` (.h added if missing) and the .cc beside it, atomically.
    `info` is what export returned (arena, input/output shape and quantization).
    Returns {header, source, symbol}."""
    path = os.fspath(path)
    base = path.removesuffix(".h")
    header, source, prefix = base + ".h", base + ".cc", c_name(base)
    if not model_bytes:
        raise EdgekdError("no model bytes to write")
    with atomic_path(header) as th, atomic_path(source) as ts:
        with open(th, "w", encoding="ascii") as f:
            f.write(_header(prefix, len(model_bytes), info))
        with open(ts, "w", encoding="ascii") as f:
            f.write(_source(prefix + "_tflite", os.path.basename(header), model_bytes))
    return {"header": header, "source": source, "symbol": prefix + "_tflite"}


def _macros(prefix, t):
    dims = ", ".join(str(d) for d in t["shape"])
    elems = 1
    for d in t["shape"]:
        elems *= d
    lines = [f"#define {prefix}_RANK {len(t['shape'])}",
             f"#define {prefix}_DIMS {{{dims}}}",
             f"#define {prefix}_ELEMS {elems}"]
    if t["scale"] is not None:
        lines += [f"#define {prefix}_SCALE {float(t['scale']):.9g}f",
                  f"#define {prefix}_ZERO_POINT ({int(t['zero_point'])})"]
    return lines


def _header(prefix, n, info):
    name, up, guard = prefix + "_tflite", prefix.upper(), f"{prefix.upper()}_H_"
    lines = [
        (f"/* {prefix}: a TFLite model exported by edgekd for TFLM "
        f"({'int8' if info['int8'] else 'float32'}; ops: {' '.join(info['ops'])}). */"),
        f"#ifndef {guard}", f"#define {guard}", "",
        f"#define {up}_LEN {n}",
        f"#define {up}_ARENA_BYTES {info['arena_bytes']}  /* smallest arena TFLM accepted */",
        f"#define {up}_INT8 {1 if info['int8'] else 0}",
        *_macros(f"{up}_INPUT", info["input"]),
        *_macros(f"{up}_OUTPUT", info["output"]), "",
        "#ifdef __cplusplus", 'extern "C" {', "#endif",
        f"extern const unsigned char {name}[];  /* {up}_LEN bytes, 16-byte aligned */",
        f"extern const unsigned int {name}_len;",
        "#ifdef __cplusplus", "}", "#endif", "", f"#endif  /* {guard} */", ""]
    return "\n".join(lines)


def _source(name, header, data):
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + PER_LINE])
            for i in range(0, len(data), PER_LINE)]
    body = ",\n  ".join(rows)
    return (f'#include "{header}"\n\n'
            f"alignas(16) const unsigned char {name}[] = {{\n  {body}\n}};\n"
            f"const unsigned int {name}_len = {len(data)};\n")
