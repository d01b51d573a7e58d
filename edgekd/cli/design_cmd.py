"""`edgekd design` (size a student for a device) and `edgekd profile` (measure this one)."""

import dataclasses

import click

from ..distill.config import TrainConfig
from ..distill.optim import OPTIMIZERS
from ..errors import EdgekdError
from .base import backend_option, emit, json_option, load_data, main


def _parsed(name):
    """A click callback applying edgekd.design.units.<name> (imported only when used)."""
    def convert(ctx, param, value):
        from ..design import units
        return None if value is None else getattr(units, name)(value)
    return convert


def design_text(r):
    from ..design.units import format_bytes, format_flops, format_seconds
    widths = "-".join(str(w) for w in r["widths"])
    lat = format_seconds(r["latency_s"]) if r["latency_s"] is not None else "n/a (no speed)"
    share = (f" ({r['params'] / r['teacher_params']:.1%} of the teacher)" if r.get("teacher")
             else f" (from the {r['family']} template)")
    return (f"{r['family']} student {widths}: {r['params']:,} params{share}\n"
            f"  storage {format_bytes(r['storage_bytes'])} (int8 {format_bytes(r['int8_storage_bytes'])}), "
            f"training RAM {format_bytes(r['train_ram_bytes'])}, "
            f"{format_flops(r['flops'])} per inference, latency {lat}\n"
            + (f"  on a microcontroller: ~{format_bytes(r['tflite_bytes'])} "
               f"{r['constraints']['storage_format']} .tflite, "
               f"~{format_bytes(r['arena_bytes'])} TFLM arena (predicted)\n"
               if r.get("tflite_bytes") else "")
            + (f"  training on the board: {format_bytes(r['board_train']['arena'])} arena "
               f"(batch {r['constraints']['batch']}, {r['constraints']['optimizer']}) + "
               f"{format_bytes(r['board_train']['frame_buffers'])} frame buffers\n"
               if r.get("board_train") else "")
            + f"  binding constraint: {r['binding']}"
            + (f" -> {r['output']}" if r.get("output") else ""))


@main.command()
@click.option("--teacher", "teacher_path", type=click.Path(dir_okay=False),
              help="Teacher .npz: its spec gives the family (mlp, conv1d, conv2d) and the shapes.")
@click.option("--family", type=click.Choice(["mlp", "conv1d", "conv2d"]),
              help="Without a teacher: the family to design, with shapes taken from --data.")
@click.option("--data", help="With --family: the data set whose shapes the student takes. "
                             "With --ram-for board-train: the data the board trains on (its "
                             "training split takes one settle byte per sample).")
@click.option("--profile", "profile_name",
              help="A built-in board (pi-zero, pi-zero-2, pi-4, jetson-nano, esp32-s3, "
                   "stm32f746, nrf52840); the flags below override its figures.")
@click.option("--storage", callback=_parsed("parse_bytes"),
              help="Bytes for the deployed weights, e.g. 8KiB, 1MB.")
@click.option("--ram", callback=_parsed("parse_bytes"),
              help="Bytes for training: weights + grads + optimizer state + one batch of activations.")
@click.option("--speed", callback=_parsed("parse_flops"),
              help="Device speed, e.g. 50MFLOPS (see `edgekd profile`).")
@click.option("--max-latency", callback=_parsed("parse_seconds"),
              help="Longest allowed inference, e.g. 1ms, 200us.")
@click.option("--batch", default=TrainConfig.batch, show_default=True, type=click.IntRange(1),
              help="Training batch the RAM estimate assumes.")
@click.option("--optimizer", default=TrainConfig.optimizer, show_default=True,
              type=click.Choice(OPTIMIZERS))
@click.option("--storage-format", type=click.Choice(["float32", "int8"]),
              help="Weights format the storage budget is for [float32; int8 on MCU profiles].")
@click.option("--ram-for", type=click.Choice(["train", "infer", "board-train"]),
              help="What the RAM budget must hold: train (`edgekd train` on the device), "
                   "infer (the TFLM arena), board-train (`edgekd board train` on a "
                   "microcontroller: its training arena, dense students only) "
                   "[train; infer on MCU profiles].")
@click.option("--max-fraction", default=None, show_default="0.25",
              type=click.FloatRange(0, 1, min_open=True),
              help="At most this share of the teacher's params, even where the device could "
                   "hold more (1 lifts the cap).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the student spec JSON here.")
@json_option
def design(teacher_path, family, data, profile_name, storage, ram, speed, max_latency, batch,
           optimizer, storage_format, ram_for, max_fraction, output, as_json):
    """Design the largest student that fits a device's storage, RAM and latency budget.

    Searches depth and a width multiplier within the teacher's family and prints the
    predicted params, FLOPs, storage, training RAM, latency and the constraint that binds.
    """
    from ..design.designer import MAX_TEACHER_FRACTION, Constraints, template_spec
    from ..design.designer import design as run_design
    from ..design.profiles import get_profile
    from ..fileio import write_json
    ds = load_data(data) if data else None
    spec = _teacher_spec(teacher_path, family, ds, template_spec, ram_for)
    samples = len(ds.y_train) if ds is not None and ram_for == "board-train" else None
    given = {k: v for k, v in (("storage_bytes", storage), ("ram_bytes", ram),
                               ("flops_per_s", speed), ("max_latency_s", max_latency),
                               ("storage_format", storage_format), ("ram_for", ram_for),
                               ("train_samples", samples))
             if v is not None}
    if profile_name:
        base = Constraints.from_profile(get_profile(profile_name), **given)
    elif set(given) - {"storage_format", "ram_for", "train_samples"}:
        base = Constraints(**given)
    else:
        raise EdgekdError("give a --profile or at least one of --storage, --ram, --speed, --max-latency")
    if base.max_latency_s is not None and base.flops_per_s is None:
        raise EdgekdError("--max-latency needs a device speed: give --speed or a --profile")
    base = dataclasses.replace(base, batch=batch, optimizer=optimizer,
                               max_teacher_fraction=None if max_fraction == 1 else
                               max_fraction or MAX_TEACHER_FRACTION)
    result = run_design(spec, base).to_dict()
    result["teacher"] = teacher_path   # None: designed from a family template
    if output:
        write_json(output, result["spec"])
        result["output"] = output
    emit(result, as_json, design_text)


def _teacher_spec(teacher_path, family, ds, template_spec, ram_for=None):
    if teacher_path and family:
        raise EdgekdError("give either --teacher or --family, not both")
    if teacher_path and ds is not None and ram_for != "board-train":
        raise EdgekdError("--data goes with --family (the shapes) or --ram-for board-train "
                          "(the samples); a teacher gives its own shapes")
    if teacher_path:
        from ..nn.io import load_model
        model, _, _ = load_model(teacher_path)
        return model.spec
    if family and ds is not None:
        return template_spec(family, ds.input_shape, ds.num_classes)
    raise EdgekdError("give --teacher TEACHER.npz, or --family with --data")


@main.command()
@click.option("--seconds", default=1.0, show_default=True, type=click.FloatRange(0.01),
              help="Time spent on each kernel.")
@json_option
@backend_option
def profile(seconds, as_json):
    """Measure this machine's dense and conv training FLOP/s (numpy, one thread), to pass as
    `edgekd design --speed` when designing for the machine you stand on."""
    from ..design.measure import measure_flops
    from ..design.units import format_flops
    res = measure_flops(seconds)
    emit(res, as_json, lambda r: f"dense {format_flops(r['dense_flops_per_s'], per_second=True)}, "
                                 f"conv {format_flops(r['conv_flops_per_s'], per_second=True)} "
                                 f"(use --speed with the one matching your student)")
