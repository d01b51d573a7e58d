"""The export pipeline behind `edgekd export`: model file -> calibration -> .tflite bytes ->
board fit -> files (flags and printing are edgekd/cli/export_cmd.py)."""

import numpy as np

from ..errors import EdgekdError
from .api import build_tflite, write_tflite
from .board import board_fit
from .c_array import write_c_array

FORMATS = ("tflite", "c")


def calibration_x(name, samples, seed=0):
    """Up to `samples` training inputs of data set `name`, a seeded random subset."""
    from ..data import load_dataset
    x = load_dataset(name).x_train
    if len(x) > samples:
        x = x[np.sort(np.random.default_rng(seed).permutation(len(x))[:samples])]
    return x


def misfit_text(info, fit):
    from ..design.units import format_bytes
    parts = []
    if not fit["model_fits_flash"]:
        parts.append(f"the model is {format_bytes(info['model_bytes'])}, the board gives a "
                     f"model {format_bytes(fit['model_flash_bytes'])} of flash")
    if not fit["arena_fits_ram"]:
        parts.append(f"its arena is {format_bytes(info['arena_bytes'])}, the board gives "
                     f"{format_bytes(fit['model_arena_bytes'])}")
    return f"does not fit {fit['profile']}: " + " and ".join(parts)


def run_export(model_path, output, fmt="tflite", int8=False, calib=None, calib_samples=2000,
               softmax=False, profile=None, allow_misfit=False):
    from ..design.profiles import get_profile
    from ..nn.io import load_model
    if fmt not in FORMATS:
        raise EdgekdError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if calib and not int8:
        raise EdgekdError("--calib calibrates int8 quantization: add --int8 (or drop --calib)")
    if int8 and not calib:
        raise EdgekdError("--int8 needs calibration data: --calib DATA (a built-in name or .npz)")
    if profile:
        get_profile(profile)   # an unknown board fails before the work
    model, _, _ = load_model(model_path)
    calib_x = calibration_x(calib, calib_samples) if int8 else None
    data, info = build_tflite(model, int8=int8, calib_x=calib_x, softmax=softmax)
    result = {**info, "format": fmt}
    if profile:
        fit = result["board"] = board_fit(info, model.spec, profile)
        if not fit["fits"] and not allow_misfit:
            raise EdgekdError(misfit_text(info, fit) + "; nothing written (--allow-misfit "
                                                       "writes it anyway)")
    if fmt == "c":
        result.update(write_c_array(data, output, info))
    else:
        write_tflite(data, output)
        result["path"] = str(output)
    return result
