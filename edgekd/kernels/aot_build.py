"""Builds one generated program ahead of time (kernels/aot.py runs this in a child process):

    python -m edgekd.kernels.aot_build SOURCE.py OUT.so

Each function the source's EXPORTS table names is compiled by its @njit twin for exactly the
listed argument types (so the twin's fastmath flags and the return type numba infers hold)
and exported through numba.pycc for this machine's CPU. OUT appears whole or not at all.
"""

import glob
import importlib.util
import os
import shutil
import sys
import tempfile
import warnings


def numba_type(code):
    """The numba type an EXPORTS code stands for (see kernels/step_numba.py)."""
    from numba import types
    arrays = {"f2": (types.float32, 2), "f1": (types.float32, 1), "i1": (types.int64, 1),
              "b1": (types.boolean, 1)}
    if code in arrays:
        return types.Array(arrays[code][0], arrays[code][1], "C")
    return {"f": types.float64, "i": types.int64, "b": types.boolean}[code]


def build(src, out):
    warnings.simplefilter("ignore")  # numba.pycc is pending deprecation, and says so
    from numba import njit
    from numba.core import codegen
    from numba.pycc import CC
    # pycc's "host" CPU takes the features the CPU model implies; numba's JIT takes the ones
    # this CPU reports. The JIT's are used, so the vector width and with it the order of
    # float sums are the JIT step's: the same bits either way.
    codegen.AOTCPUCodegen._customize_tm_features = codegen.JITCPUCodegen._customize_tm_features
    name = os.path.basename(out).split(".")[0]
    spec = importlib.util.spec_from_file_location(name, src)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    tmp = tempfile.mkdtemp(prefix=".build-", dir=os.path.dirname(out))
    try:
        cc = CC(name)
        cc.output_dir, cc.target_cpu, cc.verbose = tmp, "host", False
        for fn, codes in mod.EXPORTS.items():
            argtypes = tuple(numba_type(c) for c in codes.split())
            plain = fn.endswith("sizes")   # integer arithmetic in plain Python
            twin = njit(getattr(mod, fn)) if plain else getattr(mod, fn)
            twin.compile(argtypes)
            ret = twin.overloads[argtypes].signature.return_type
            cc.export(fn, ret(*argtypes))(getattr(mod, fn if plain else f"aot_{fn}"))
        cc.compile()
        built, = glob.glob(os.path.join(tmp, name + "*"))
        os.replace(built, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    build(*sys.argv[1:3])
