"""`edgekd board ...`: serial-connected microcontroller boards (the front end of
firmware_bridge, which holds the protocol, the emulator and the reference firmware)."""

import json
import os
import sys

import click

from ..distill.config import TrainConfig
from ..distill.halting import HaltingConfig
from ..errors import EdgekdError
from ..link.settings import LinkConfig
from .base import BYTES, Unit, emit, json_option, load_data, load_spec_file, main, seconds_at_least
from .train_cmd import DATA_HELP

# defaults come from the device trainer's configs, so a board trains as `edgekd train` does

_HALT = HaltingConfig(threshold="absolute", eps=0.05)   # train-last settles by the absolute rule
_STUDENT_HALT = HaltingConfig()   # board train: the device trainer's rule (relative threshold)
_TRAIN = TrainConfig()


def port_options(f):
    opts = [
        click.option("--port", required=True, envvar="EDGEKD_PORT",
                     help="Serial port: a device (/dev/ttyUSB0, /dev/pts/N) or a pyserial URL "
                          "(socket://host:port, loop://). Or EDGEKD_PORT."),
        click.option("--baud", default=115200, show_default=True, type=click.IntRange(1)),
        click.option("--timeout", default=2.0, show_default=True, type=seconds_at_least(0.01),
                     help="Seconds to wait for each reply before resending."),
        click.option("--retries", default=4, show_default=True, type=click.IntRange(0),
                     help="Resends of a request before giving up."),
        click.option("-v", "--verbose", is_flag=True, help="Log every resend on stderr."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _connect(port, baud, timeout, retries, verbose):
    from firmware_bridge.commands import connect
    log = (lambda msg: click.echo(f"edgekd: board: {msg}", err=True)) if verbose else None
    return connect(port, baud, timeout, retries, log=log)


def _bytes(client):
    """What the line carried (host -> board is down), and how many requests were resent."""
    return {"bytes_down": client.link.sent, "bytes_up": client.link.received,
            "resends": client.resends}


@main.group()
def board():
    """Microcontroller boards over a serial line: deploy, run and train the last layer.

    \b
    edgekd board emulate --profile esp32-s3 --json      # a board on a pseudo-terminal
    edgekd board info --port /dev/pts/N
    edgekd board deploy student.tflite --port /dev/pts/N
    edgekd board infer --data digits --port /dev/pts/N
    edgekd board train-last --teacher teacher.npz --data digits --port /dev/pts/N
    edgekd board weights -o last.npz --port /dev/pts/N

    bytes_down counts what the host sent to the board, bytes_up what it sent back,
    COBS and frame overhead included.
    """


@board.command()
@port_options
@json_option
def info(port, baud, timeout, retries, verbose, as_json):
    """The board's name, RAM, flash, clock, arena, protocol version and deployed model."""
    from firmware_bridge.commands import info as board_info
    with _connect(port, baud, timeout, retries, verbose) as client:
        res = board_info(client).to_dict()
    emit(res, as_json, _info_text)


def _info_text(r):
    line = (f"{r['name']}: {r['ram_bytes']:,} B RAM, {r['flash_bytes']:,} B flash, "
            f"{r['clock_hz'] / 1e6:g} MHz, arena {r['arena_bytes']:,} B, "
            f"protocol {r['protocol']}, takes {r['format']} models")
    if not r["model_loaded"]:
        return line + "\nno model deployed"
    return (line + f"\nmodel {r['model_bytes']:,} B (sha256 {r['model_sha256'][:16]}...), "
            f"arena used {r['arena_used']:,} B, {r['input']['features']} "
            f"{r['input']['dtype']} inputs -> {r['output']['features']} outputs"
            f"{', last layer trained' if r['head_trained'] else ''}")


@board.command()
@click.argument("model_path", type=click.Path(dir_okay=False))
@port_options
@click.option("--chunk-retries", default=3, show_default=True, type=click.IntRange(0),
              help="Resends of a chunk that failed its CRC on the board.")
@json_option
def deploy(model_path, port, baud, timeout, retries, verbose, chunk_retries, as_json):
    """Deploy MODEL_PATH (.tflite from `edgekd export`) to the board.

    A board running TFLM gets the .tflite; the reference C firmware gets its int8 EKB form
    (dense models only). Chunks carry CRCs, the whole model a SHA-256; the board refuses a
    model or an arena that does not fit.
    """
    from firmware_bridge.commands import deploy as board_deploy
    with open(model_path, "rb") as f:
        data = f.read()
    with _connect(port, baud, timeout, retries, verbose) as client, _ByteBar("deploying") as bar:
        res = board_deploy(client, data, where=model_path, chunk_retries=chunk_retries,
                           progress=bar.update)
        res.update(_bytes(client))
    emit(res, as_json, lambda r: f"deployed {r['model_bytes']:,} B ({r['format']}) to "
                                 f"{r['board']} in {r['chunks']} chunks "
                                 f"({r['chunks_resent']} resent); arena {r['arena_used']:,} "
                                 f"of {r['arena_bytes']:,} B")


class _ByteBar:
    """Bytes sent so far, as a progress bar on stderr (only on a terminal, and only once
    the first chunk is through, so a refusal stays one line)."""

    def __init__(self, label):
        self.label, self.bar, self.done = label, None, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def update(self, done, total):
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr,
                                         show_pos=True)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done


@board.command()
@click.option("--data", required=True, help=DATA_HELP)
@click.option("--limit", type=click.IntRange(1), help="Only the first N test samples.")
@port_options
@json_option
def infer(data, limit, port, baud, timeout, retries, verbose, as_json):
    """Run the deployed model on the board over the test split; reports test_accuracy."""
    import hashlib

    import numpy as np

    from firmware_bridge.commands import infer as board_infer
    from firmware_bridge.commands import info as board_info
    ds = load_data(data)
    x, y = ds.x_test[:limit], ds.y_test[:limit]
    with _connect(port, baud, timeout, retries, verbose) as client:
        b = board_info(client)
        out, raw = board_infer(client, x, b)
        res = {"board": b.name, "samples": len(x),
               "test_accuracy": float(np.mean(out.argmax(axis=1) == y)) if len(x) else 0.0,
               "output_dtype": "int8" if raw is not None else "float32",
               "outputs_sha256": hashlib.sha256((raw if raw is not None else out).tobytes()).hexdigest(),
               "head_trained": b.trained}
        res.update(_bytes(client))
    emit(res, as_json, lambda r: f"test accuracy {r['test_accuracy']:.4f} on {r['samples']} "
                                 f"samples ({r['output_dtype']} outputs from {r['board']})")


@board.command("train-last")
@click.option("--teacher", "teacher_path", required=True, type=click.Path(dir_okay=False),
              help="Teacher: edgekd .npz, .onnx, .tflite, or precomputed logits .npy.")
@click.option("--data", required=True, help=DATA_HELP + " Its training split is streamed.")
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=0.01, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--lr-decay", default=0.5, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="The learning rate is multiplied by this after every epoch.")
@click.option("--holdout", default=0.2, show_default=True, type=click.FloatRange(0, 0.9),
              help="Fraction of the samples held out (not streamed for training) to score the "
                   "layer on the board before training and after each epoch; the best layer, "
                   "the starting one included, is the one kept. 0: keep the last.")
@click.option("--batch", default=32, show_default=True, type=click.IntRange(1),
              help="Samples per TRAIN_LAST frame (fewer if the board's frames are smaller).")
@click.option("--temperature", "-T", default=4.0, show_default=True,
              type=click.FloatRange(0, min_open=True))
@click.option("--alpha", default=0.9, show_default=True, type=click.FloatRange(0, 1))
@click.option("--halting/--no-halting", default=True, show_default=True,
              help="Stop streaming samples whose KL to the teacher has settled.")
@click.option("--eps", default=_HALT.eps, show_default=True, type=click.FloatRange(0))
@click.option("--patience", default=_HALT.patience, show_default=True, type=click.IntRange(1))
@click.option("--rho", default=_HALT.rho, show_default=True, type=click.FloatRange(0, 1),
              help="Stop when this fraction of samples has settled.")
@click.option("--reset", "reset_first", is_flag=True,
              help="Start from the deployed last layer, not from earlier training.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--limit", type=click.IntRange(1), help="Only the first N training samples.")
@port_options
@json_option
def train_last(teacher_path, data, epochs, lr, lr_decay, holdout, batch, temperature, alpha,
               halting, eps, patience, rho, reset_first, seed, limit, port, baud, timeout,
               retries, verbose, as_json):
    """Train the board's last dense layer (float SGD on the KD loss) from streamed inputs
    and teacher logits, with early halting of settled samples.

    It never leaves the board worse than it found it: a held-out slice (--holdout) is
    scored on the board before training and after each epoch, and the best layer is the one
    kept (`kept`: trained, epoch N, or before). Reports loss_before and loss_after (KD loss
    over the streamed samples, measured on the board), holdout (accuracy and KD loss before
    and of the layer kept), bytes_down/bytes_up of training, bytes_eval of the measuring
    passes, and bytes_naive_run (the same epochs without halting; bytes_naive_planned for all
    of --epochs).
    """
    from edgekd.distill.halting import HaltingConfig
    from edgekd.teachers import load_teacher
    from firmware_bridge.commands import reset
    from firmware_bridge.train_last import TrainLastConfig
    from firmware_bridge.train_last import train_last as run
    ds = load_data(data)
    x_train, y_train = ds.x_train[:limit], ds.y_train[:limit]
    logits = load_teacher(teacher_path, ds).logits(x_train)
    cfg = TrainLastConfig(epochs=epochs, lr=lr, lr_decay=lr_decay, holdout=holdout,
                          temperature=temperature, alpha=alpha, batch=batch, seed=seed,
                          halting=HaltingConfig(enabled=halting, eps=eps, threshold="absolute",
                                                patience=patience,
                                                rho=rho).check())
    from .base import EpochBar
    with _connect(port, baud, timeout, retries, verbose) as client, \
            EpochBar(epochs, "training on the board",
                     ["loss", "settled_fraction", "holdout_accuracy", "streamed"]) as bar:
        if reset_first:
            reset(client)
        res = run(client, x_train, y_train, logits, cfg, on_epoch=bar.update)
    emit(res, as_json, lambda r: f"KD loss {r['loss_before']:.4f} -> {r['loss_after']:.4f} "
                                 f"after {r['epochs_run']} epochs ({r['stop_reason']}); "
                                 f"kept the {'layer from before training' if r['kept'] == 'before' else r['kept'] + ' layer'}"
                                 f"{_holdout_text(r['holdout'])}; "
                                 f"link {r['bytes_down'] + r['bytes_up']:,} B vs "
                                 f"{r['bytes_naive_run']:,} without halting")


def _holdout_text(h):
    if not h:
        return ""
    return (f" (held-out accuracy {h['accuracy_before']:.4f} -> {h['accuracy_after']:.4f} on "
            f"{h['samples']} samples)")


@board.command("train")
@click.option("--student", "student_path", type=click.Path(dir_okay=False),
              help="Student spec (.json, dense layers) to initialise from --seed.")
@click.option("--init", "init_path", type=click.Path(dir_okay=False),
              help="Or an edgekd model .npz whose spec and weights the board starts from.")
@click.option("--teacher", "teacher_path", required=True, type=click.Path(dir_okay=False),
              help="Teacher: edgekd .npz, .onnx, .tflite, or precomputed logits .npy.")
@click.option("--data", required=True, help=DATA_HELP + " Its training split is streamed; "
                                                        "its test split is scored on the board.")
@click.option("--epochs", default=_TRAIN.epochs, show_default=True, type=click.IntRange(1))
@click.option("--batch", default=_TRAIN.batch, show_default=True, type=click.IntRange(1, 65535),
              help="Samples per optimizer step (a batch spans several frames if it must).")
@click.option("--optimizer", default=_TRAIN.optimizer, show_default=True,
              type=click.Choice(["sgd", "adam"]))
@click.option("--lr", default=_TRAIN.lr, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--lr-schedule", default=_TRAIN.lr_schedule, show_default=True,
              type=click.Choice(["cosine", "constant"]))
@click.option("--momentum", default=_TRAIN.momentum, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="SGD's momentum.")
@click.option("--temperature", "-T", default=_TRAIN.temperature, show_default=True,
              type=click.FloatRange(0, min_open=True))
@click.option("--alpha", default=_TRAIN.alpha, show_default=True, type=click.FloatRange(0, 1))
@click.option("--halting/--no-halting", default=True, show_default=True,
              help="Let the board settle samples (KL <= eps, times the teacher's information "
                   "under --threshold relative, and argmax agreement for --patience visits); "
                   "the host stops sending them.")
@click.option("--eps", default=_STUDENT_HALT.eps, show_default=True, type=click.FloatRange(0))
@click.option("--threshold", default=_STUDENT_HALT.threshold, show_default=True,
              type=click.Choice(["relative", "absolute"]),
              help="relative: --eps times KL(teacher || uniform) at T, per sample (the device "
                   "trainer's default); absolute: --eps itself.")
@click.option("--patience", default=_STUDENT_HALT.patience, show_default=True, type=click.IntRange(1, 127))
@click.option("--rho", default=_STUDENT_HALT.rho, show_default=True, type=click.FloatRange(0, 1),
              help="Stop when this fraction of samples has settled.")
@click.option("--patience-epochs", default=_STUDENT_HALT.patience_epochs, show_default=True,
              type=click.IntRange(1), help="Stop when the validation KL (measured on the board) "
                                           "has not improved for this many epochs.")
@click.option("--val-fraction", default=_TRAIN.val_fraction, show_default=True,
              type=click.FloatRange(0, 1, max_open=True))
@click.option("--x-codec", default=LinkConfig.x_codec, show_default=True, type=click.Choice(["u8", "f32"]),
              help="Inputs on the line: u8 (lo + q * step, one scale for all features) or f32.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--limit", type=click.IntRange(1), help="Only the first N training samples.")
@port_options
@json_option
def train_student(student_path, init_path, teacher_path, data, epochs, batch, optimizer, lr,
                  lr_schedule, momentum, temperature, alpha, halting, eps, threshold, patience, rho,
                  patience_epochs, val_fraction, x_codec, seed, limit, port, baud, timeout,
                  retries, verbose, as_json):
    """Train the whole float32 student on the board by KD, with early halting decided there.

    The board keeps weights, gradients, optimizer state and one frame of activations in a
    static arena; the host refuses a student that does not fit before sending it. The host
    streams (id, label, x, teacher logits) in edgekd's epoch order; the board runs forward,
    KD loss, backward and the SGD/Adam step, settles samples by the device trainer's rule and
    reports them, and the host stops sending them. Epochs stop at --rho or on a validation
    KL plateau measured on the board; the best epoch's weights stay. Reports test_accuracy
    (on the board), loss_before/loss_after, bytes_down/bytes_up, bytes_naive_run (also named
    bytes_naive: the epochs run, streamed as float32 without halting), bytes_naive_planned
    (every planned epoch), settled_fraction, epochs_run and the board's memory plan beside
    the predicted one. `edgekd board weights -o student.npz` reads the student.
    """
    import numpy as np

    from edgekd.nn.io import load_model
    from edgekd.nn.model import Sequential
    from edgekd.teachers import load_teacher
    from edgekd.workflows import check_student
    from firmware_bridge.board_train import BoardTrainer

    from .base import EpochBar
    if (student_path is None) == (init_path is None):
        raise EdgekdError("give one of --student S.json or --init student.npz")
    if init_path is not None:
        model = load_model(init_path)[0]
    else:
        model = Sequential(load_spec_file(student_path), seed=seed, where=student_path)
    cfg = TrainConfig(epochs=epochs, batch=batch, lr=lr, lr_schedule=lr_schedule,
                      optimizer=optimizer, momentum=momentum, seed=seed,
                      temperature=temperature, alpha=alpha, val_fraction=val_fraction,
                      val_metric="kl",
                      halting=HaltingConfig(enabled=halting, eps=eps, threshold=threshold,
                                            patience=patience,
                                            rho=rho, patience_epochs=patience_epochs))
    ds = load_data(data)
    where = init_path or student_path
    check_student(model.spec, ds, where=where)
    teacher = load_teacher(teacher_path, ds)
    check_student(model.spec, teacher=teacher, where=where)
    x_train, y_train = ds.x_train[:limit], ds.y_train[:limit]
    logits = teacher.logits(x_train)
    with _connect(port, baud, timeout, retries, verbose) as client, \
            EpochBar(epochs, "training on the board",
                     ["loss", "settled_fraction", "val_kl", "streamed"]) as bar:
        trainer = BoardTrainer(client, model.spec, model.flat_params, cfg, x_codec)
        res = trainer.run(x_train, y_train, logits, ds.x_test, ds.y_test, on_epoch=bar.update)
    emit(res, as_json, lambda r: f"test accuracy {r['test_accuracy']:.4f} on the board after "
                                 f"{r['epochs_run']} epochs ({r['stop_reason']}); KD loss "
                                 f"{r['loss_before']:.4f} -> {r['loss_after']:.4f}; link "
                                 f"{r['bytes_down'] + r['bytes_up']:,} B vs "
                                 f"{r['bytes_naive_run']:,} naive for the epochs run "
                                 f"({r['bytes_naive_planned']:,} for all planned); settled "
                                 f"{r['settled_fraction']:.1%}")


@board.command()
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the .npz: the float student trained by `board train` as an "
                   "edgekd model (eval and export read it); without one, the last dense layer "
                   "(arrays kernel [in, out], bias, W [out, in]).")
@port_options
@json_option
def weights(output, port, baud, timeout, retries, verbose, as_json):
    """Read the board's float student (or its int8 model's last dense layer) into an .npz."""
    import hashlib

    import numpy as np

    from edgekd.fileio import atomic_path
    from firmware_bridge.commands import get_weights
    with _connect(port, baud, timeout, retries, verbose) as client:
        student = _read_student(client)
        if student is not None:
            from edgekd.nn.io import save_model
            from edgekd.nn.model import Sequential
            spec, flat = student
            model = Sequential(spec, where="the board's student")
            model.flat_params[...] = flat
            res = _bytes(client)
            save_model(output, model, meta={"source": "edgekd board weights"})
            res.update(output=os.fspath(output), kind="student", spec=spec,
                       params=int(flat.size), weights_sha256=model.weights_sha256())
            emit(res, as_json, lambda r: f"student ({r['params']:,} weights) -> {r['output']}")
            return
        w, b = get_weights(client)
        res = _bytes(client)
    with atomic_path(output) as tmp, open(tmp, "wb") as f:
        np.savez(f, kernel=w.T, bias=b, W=w)
    res.update(output=os.fspath(output), kind="last_layer", shape=list(w.shape),
               sha256=hashlib.sha256(w.tobytes() + b.tobytes()).hexdigest())
    emit(res, as_json, lambda r: f"last layer {r['shape'][0]}x{r['shape'][1]} -> {r['output']}")


def _read_student(client):
    """(spec, flat weights) of the board's float student, or None when it has none."""
    from firmware_bridge.board_train import read_student
    from firmware_bridge.protocol import BoardError
    from firmware_bridge.student import query
    try:
        if query(client)[1] is None:
            return None
    except BoardError:
        return None  # a board that does not train students
    return read_student(client)


@board.command("reset")
@click.option("--erase", is_flag=True, help="Also remove the deployed model.")
@port_options
@json_option
def reset_(erase, port, baud, timeout, retries, verbose, as_json):
    """Restore the deployed last layer (discard TRAIN_LAST), or --erase the model."""
    from firmware_bridge.commands import reset
    with _connect(port, baud, timeout, retries, verbose) as client:
        reset(client, erase)
        res = {"erased": erase, **_bytes(client)}
    emit(res, as_json, lambda r: "model erased" if r["erased"] else "last layer restored")


@board.command()
@click.option("--profile", default="esp32-s3", show_default=True,
              help="Board profile (esp32-s3, stm32f746, nrf52840): RAM, flash, clock.")
@click.option("--arena", type=BYTES, help="Tensor arena, e.g. 32KiB [half the RAM left by the firmware].")
@click.option("--ram", type=BYTES, help="Override the profile's RAM, e.g. 64KiB.")
@click.option("--flash", type=BYTES, help="Override the profile's flash, e.g. 1MiB.")
@click.option("--max-payload", default="4KiB", show_default=True, type=Unit("SIZE", "parse_bytes", 64, 1 << 20),
              help="The board's frame buffer: largest payload it sends or accepts.")
@click.option("--drop-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Fault injection: probability of losing each frame, either way.")
@click.option("--corrupt-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Fault injection: probability of flipping a bit in each frame, either way.")
@click.option("--flash-error-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Fault injection: probability that a flash write stores a flipped bit.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the faults.")
@click.option("-v", "--verbose", is_flag=True, help="Log every request on stderr.")
@json_option
def emulate(profile, arena, ram, flash, max_payload, drop_rate, corrupt_rate, flash_error_rate,
            seed, verbose, as_json):
    """Serve the board protocol on a new pseudo-terminal, running deployed models in the
    TFLM interpreter within the profile's arena, RAM and flash. The first stdout line names
    the port (with --json: {"port": ...}); Ctrl-C or SIGTERM stops it."""
    from firmware_bridge.emulator import BoardSpec, EmulatedBoard, serve
    from firmware_bridge.emulator.faults import Faults
    from firmware_bridge.emulator.pty_port import open_pty
    spec = BoardSpec.from_profile(profile, arena=arena, ram=ram, flash=flash,
                                  max_payload=max_payload)
    faults = Faults(drop_rate, corrupt_rate, flash_error_rate, seed)
    faults = faults if faults.any() else None
    master, _slave, path = open_pty()
    res = {"port": path, "profile": spec.name, "ram_bytes": spec.ram,
           "flash_bytes": spec.flash, "arena_bytes": spec.arena,
           "max_model_bytes": spec.max_model, "pid": os.getpid()}
    if as_json:
        click.echo(json.dumps(res))
    else:
        click.echo(f"emulating {spec.name} on {path} (arena {spec.arena:,} B; Ctrl-C stops)")
    sys.stdout.flush()
    _exit_on_sigterm()
    serve(EmulatedBoard(spec, faults), master, faults, verbose)


def _exit_on_sigterm():
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


@board.command()
@click.option("--data", required=True, help=DATA_HELP + " Its first test sample is the input; "
                                                        "its first training samples train.")
@click.option("-n", "runs", default=20, show_default=True, type=click.IntRange(1, 65535),
              help="Inferences the board runs in one BENCH request.")
@click.option("--train-student", "train_spec", type=click.Path(dir_okay=False),
              help="Also count instructions per training sample of this dense student spec "
                   "(TRAIN_STEP, SGD and Adam, batch 1 and --batch).")
@click.option("--teacher", "teacher_path", type=click.Path(dir_okay=False),
              help="Teacher logits for the training count [the labels as one-hot logits; "
                   "the count hardly depends on them].")
@click.option("--batch", default=_TRAIN.batch, show_default=True, type=click.IntRange(2, 65535),
              help="The default batch for the training count.")
@port_options
@json_option
def bench(data, runs, train_spec, teacher_path, batch, port, baud, timeout, retries, verbose,
          as_json):
    """Count the cost of one inference of the deployed model on the board, and with
    --train-student of one training sample (input decoding, forward, KD loss, backward and
    the optimizer step, averaged over two batches).

    The Cortex-M firmware counts retired instructions with SysTick, which under QEMU's
    `-icount shift=0` (`board qemu`'s default) advances with them, calibrated at boot; the
    emulator and the host build cannot count and say so (counted false, the figures null).
    """
    from firmware_bridge.commands import bench as board_bench
    from firmware_bridge.commands import info as board_info
    ds = load_data(data)
    training = _train_inputs(ds, train_spec, teacher_path, batch) if train_spec else None
    with _connect(port, baud, timeout, retries, verbose) as client:
        b = board_info(client)
        res = {"board": b.name, "runs": runs, "counted": None, "instructions_per_inference": None}
        if b.has_model:
            ticks, counted = board_bench(client, ds.x_test[0], runs, b)
            res.update(counted=counted, instructions_per_inference=ticks / runs if counted else None)
        elif train_spec is None:
            raise EdgekdError(f"board {b.name} has no model: deploy one, or give --train-student")
        if train_spec is not None:
            res["training"] = _train_costs(client, *training)
            res["counted"] = all(r["counted"] for r in res["training"])
        res.update(_bytes(client))

    def text(r):
        if not r["counted"]:
            return f"{r['board']} cannot count instructions"
        lines = [f"{r['board']}: {r['instructions_per_inference']:,.0f} instructions per "
                 f"inference ({r['runs']} runs)"] if r["instructions_per_inference"] else []
        lines += [f"{r['board']}: {t['instructions_per_sample']:,.0f} instructions per training "
                  f"sample ({t['optimizer']}, batch {t['batch']})" for t in r.get("training", [])]
        return "\n".join(lines)
    emit(res, as_json, text)


def _train_inputs(ds, spec_path, teacher_path, batch):
    """The student and two batches of (x, y, teacher logits) to count training on, checked
    against the data and the teacher before the board is dialed."""
    import numpy as np

    from edgekd.nn.model import Sequential
    from edgekd.workflows import check_student
    model = Sequential(load_spec_file(spec_path), where=spec_path)
    check_student(model.spec, ds, where=spec_path)
    n = min(len(ds.y_train), 2 * batch)
    x, y = ds.x_train[:n], ds.y_train[:n]
    if teacher_path is not None:
        from edgekd.teachers import load_teacher
        teacher = load_teacher(teacher_path, ds)
        check_student(model.spec, teacher=teacher, where=spec_path)
        t = teacher.logits(x)
    else:
        t = 4.0 * np.eye(model.num_classes, dtype=np.float32)[y]
    return model, x, y, t, batch


def _train_costs(client, model, x, y, t, batch):
    from firmware_bridge.bench_train import train_cost
    return [train_cost(client, model.spec, model.flat_params, x, y, t, opt, b,
                       steps=2 if b > 1 else 8)
            for opt in ("sgd", "adam") for b in (1, batch)]


def _byte_size(ctx, param, value):
    from ..design.units import parse_bytes
    return None if value is None else parse_bytes(value)


FIRMWARE_TARGETS = ("host", "mps2-an386", "mps2-an385")


@board.command()
@click.option("-o", "--out", default="build", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the executable (host) or the ELF image (Cortex-M).")
@click.option("--target", default="host", show_default=True, type=click.Choice(FIRMWARE_TARGETS),
              help="host: gcc, serves a pseudo-terminal. mps2-an386: Cortex-M4F (hard float), "
                   "mps2-an385: Cortex-M3 (soft float), for QEMU's MPS2 boards "
                   "(arm-none-eabi-gcc + newlib-nano).")
@click.option("--ram", callback=_byte_size, metavar="SIZE",
              help="The board's RAM, e.g. 256KiB [host 512KiB, mps2 256KiB]. On Cortex-M the "
                   "linker script and the MPU enforce it.")
@click.option("--flash", callback=_byte_size, metavar="SIZE",
              help="The board's flash as INFO reports it [host 8MiB, mps2 4MiB].")
@click.option("--stack", callback=_byte_size, metavar="SIZE",
              help="Cortex-M: the thread stack, e.g. 2KiB [8KiB]. The MPU guard below it "
                   "turns an overflow into a reported fault; digits training needs 1.5 KiB.")
@click.option("-D", "defines", multiple=True, metavar="NAME=VALUE",
              help="Firmware setting (see firmware_bridge/firmware/ekb_config.h), repeatable.")
@click.option("--run", is_flag=True, help="Run it: it serves a pseudo-terminal like `emulate` "
                                          "(a Cortex-M image runs in QEMU, as `board qemu`).")
@json_option
def firmware(out, target, ram, flash, stack, defines, run, as_json):
    """Build the reference C firmware for this host (gcc) or an MPS2 Cortex-M board,
    optionally run it. --json reports the image's path and, for Cortex-M, its sizes
    (text: code in flash, bss: static RAM, stack, model_slot: flash for the model)."""
    from firmware_bridge.build import build_firmware, image_sizes
    parsed = {}
    for d in defines:
        name, sep, value = d.partition("=")
        if not name.isidentifier():
            raise EdgekdError(f"-D expects NAME=VALUE, got {d!r}")
        parsed[name] = value if sep else "1"
    exe = build_firmware(out, parsed, target=target, ram=ram, flash=flash, stack=stack)
    if run and target == "host":
        sys.stdout.flush()
        os.execv(exe, [exe])
    if run:
        _serve_qemu(target, exe, True, as_json)
        return
    res = {"executable": exe, "target": target}
    if target != "host":
        res.update(image_sizes(exe))
    emit(res, as_json, lambda r: r["executable"] + (
        f" (text {r['text']:,} B, bss {r['bss']:,} B, stack {r['stack']:,} B)"
        if "text" in r else ""))


@board.command()
@click.option("--machine", default="mps2-an386", show_default=True,
              type=click.Choice(FIRMWARE_TARGETS[1:]),
              help="QEMU machine: mps2-an386 (Cortex-M4F) or mps2-an385 (Cortex-M3).")
@click.option("--firmware", "firmware_path", default="build", show_default=True,
              type=click.Path(),
              help="An ELF image from `board firmware`, or a directory to build it in (an "
                   "unchanged build is reused).")
@click.option("--ram", callback=_byte_size, metavar="SIZE",
              help="The board's RAM when building, e.g. 256KiB [256KiB].")
@click.option("--stack", callback=_byte_size, metavar="SIZE",
              help="The thread stack when building, e.g. 2KiB [8KiB].")
@click.option("--icount/--no-icount", default=True, show_default=True,
              help="Run under -icount shift=0: SysTick counts retired instructions.")
@json_option
def qemu(machine, firmware_path, ram, stack, icount, as_json):
    """Run the Cortex-M firmware in QEMU with its UART on a pseudo-terminal. The first stdout
    line names the port (with --json: {"port": ...}), as `emulate` prints it; every other
    `edgekd board` command works against it. Ctrl-C or SIGTERM stops QEMU."""
    from firmware_bridge.build import build_firmware
    if os.path.isdir(firmware_path) or not os.path.exists(firmware_path):
        image = build_firmware(firmware_path, target=machine, ram=ram, stack=stack)
    else:
        if ram is not None or stack is not None:
            raise EdgekdError("--ram and --stack apply when building: give --firmware a "
                              "directory")
        image = firmware_path
    _serve_qemu(machine, image, icount, as_json)


def _serve_qemu(machine, image, icount, as_json):
    from firmware_bridge.qemu import QemuBoard, run_until_signalled

    def ready(b):
        res = {"port": b.port, "machine": machine, "firmware": image, "icount": icount,
               "pid": b.pid}
        if as_json:
            click.echo(json.dumps(res))
        else:
            click.echo(f"QEMU {machine} on {b.port} (firmware {image}; Ctrl-C stops)")
        sys.stdout.flush()

    run_until_signalled(QemuBoard(machine, image, icount), ready)
