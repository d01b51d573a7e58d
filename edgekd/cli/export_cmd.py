"""`edgekd export`: a trained model to .tflite or C source for TFLM on a microcontroller."""

import click

from .base import emit, json_option, main


def export_text(r):
    from ..design.units import format_bytes
    kind = "int8" if r["int8"] else "float32"
    where = (f"{r['header']} + {r['source']}" if r["format"] == "c" else r["path"])
    lines = [(f"{kind} TFLite model: {r['model_bytes']:,} bytes, tensor arena "
             f"{r['arena_bytes']:,} bytes, ops {' '.join(r['ops'])} -> {where}")]
    if r["int8"]:
        for name in ("input", "output"):
            t = r[name]
            lines.append(f"  {name} {t['shape']} int8, scale {t['scale']:.6g}, "
                         f"zero point {t['zero_point']}")
    b = r.get("board")
    if b:
        flash = (format_bytes(b["model_flash_bytes"]) if b["model_flash_bytes"] is not None
                 else "unbounded")
        lines.append(f"  {b['profile']}: {'fits' if b['fits'] else 'does NOT fit'}: model "
                     f"{format_bytes(r['model_bytes'])} of the {flash} of flash a model gets, "
                     f"arena {format_bytes(r['arena_bytes'])} of "
                     f"{format_bytes(b['model_arena_bytes'])} "
                     f"(the designer predicted {format_bytes(b['predicted_model_bytes'])} and "
                     f"{format_bytes(b['predicted_arena_bytes'])})")
    return "\n".join(lines)


@main.command()
@click.argument("model_path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["tflite", "c"]), default="tflite",
              show_default=True, help="A .tflite file, or C source (OUT.h and OUT.cc).")
@click.option("--int8", is_flag=True,
              help="Full-integer quantization (int8 weights, activations, input and output).")
@click.option("--calib", help="With --int8: calibration data, a built-in name (digits, iris, sensor, fashion-mnist) "
                              "or an .npz; its training inputs are used.")
@click.option("--calib-samples", default=2000, show_default=True, type=click.IntRange(1),
              help="Calibrate on at most this many samples (a seeded random subset).")
@click.option("--softmax", is_flag=True, help="End with SOFTMAX: probabilities, not logits.")
@click.option("--profile", "profile_name",
              help="A board (esp32-s3, stm32f746, nrf52840, ...): does the model fit its "
                   "flash and RAM?")
@click.option("--allow-misfit", is_flag=True,
              help="With --profile: write the model even if it does not fit the board.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The .tflite file, or with --format c the header (the .cc goes beside it).")
@json_option
def export(model_path, fmt, int8, calib, calib_samples, softmax, profile_name, allow_misfit,
           output, as_json):
    """Export a trained model for TensorFlow Lite for Microcontrollers.

    Batchnorm folds into the layer before it, dropout vanishes, relu/relu6 are fused. The
    tensor arena is the smallest the TFLM interpreter accepts, found by search. Nothing is
    written when anything fails.
    """
    from ..export.pipeline import run_export
    res = run_export(model_path, output, fmt, int8, calib, calib_samples, softmax, profile_name,
                     allow_misfit)
    emit(res, as_json, export_text)
