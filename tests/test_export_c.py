"""C source export: the header compiles as C99 and C++, and a program built from the .cc
holds the model bytes, 16-byte aligned, with the sizes and quantization of the export."""

import shutil
import subprocess

import numpy as np
import pytest
from test_export_float import SPECS, inputs, trained_like

from edgekd.export import build_tflite, write_c_array
from edgekd.export.c_array import c_name

pytest.importorskip("tflite_micro")

MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include "%(header)s"
static const int in_dims[] = %(up)s_INPUT_DIMS;
int main(void) {
  if (((uintptr_t)%(name)s) %% 16 != 0) return 2;
  if (%(name)s_len != %(up)s_LEN || %(up)s_INPUT_ELEMS != %(elems)d || in_dims[0] != 1) return 3;
  printf("%%d %%d %%.9g\n", %(up)s_ARENA_BYTES, %(up)s_OUTPUT_ZERO_POINT,
         (double)%(up)s_INPUT_SCALE);
  fwrite(%(name)s, 1, %(name)s_len, stdout);
  return 0;
}
"""


def compiler(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def test_header_compiles_and_the_program_holds_the_model(tmp_path):
    gcc, gxx = compiler("gcc"), compiler("g++")
    spec = SPECS["mixed"]
    data, info = build_tflite(trained_like(spec), int8=True, calib_x=inputs(spec))
    out = write_c_array(data, tmp_path / "kws-model.h", info)
    name = out["symbol"]
    assert name == "kws_model_tflite" and out["source"].endswith("kws-model.cc")
    header = (tmp_path / "kws-model.h").read_text()
    assert f"#define KWS_MODEL_LEN {len(data)}" in header
    assert "alignas(16)" in (tmp_path / "kws-model.cc").read_text()
    main = tmp_path / "main.c"
    main.write_text(MAIN % {"name": name, "up": "KWS_MODEL", "header": "kws-model.h",
                                "elems": int(np.prod(info["input"]["shape"]))})
    # the header alone, as C99 (firmware in C) and C++ (TFLM is C++)
    subprocess.run([gcc, "-std=c99", "-Wall", "-Werror", "-c", str(main), "-o",
                    str(tmp_path / "main.o")], check=True, cwd=tmp_path)
    subprocess.run([gxx, "-std=c++11", "-Wall", "-Werror", "-c", out["source"], "-o",
                    str(tmp_path / "model.o")], check=True, cwd=tmp_path)
    subprocess.run([gxx, str(tmp_path / "main.o"), str(tmp_path / "model.o"), "-o",
                    str(tmp_path / "prog")], check=True)
    run = subprocess.run([str(tmp_path / "prog")], capture_output=True, check=True)
    first, blob = run.stdout.split(b"\n", 1)
    arena, zp, scale = first.split()
    assert blob == data
    assert int(arena) == info["arena_bytes"] and int(zp) == info["output"]["zero_point"]
    assert np.float32(float(scale)) == np.float32(info["input"]["scale"])


def test_float_header_has_no_quantization_and_names_are_c_identifiers(tmp_path):
    spec = SPECS["dense"]
    data, info = build_tflite(trained_like(spec))
    out = write_c_array(data, tmp_path / "9lives", info)
    header = (tmp_path / "9lives.h").read_text()
    assert out["symbol"] == "model_9lives_tflite" and "MODEL_9LIVES_INT8 0" in header
    assert "_SCALE" not in header and "MODEL_9LIVES_INPUT_DIMS {1, 20}" in header
    assert c_name("a b/c.d-e.h") == "c_d_e"
