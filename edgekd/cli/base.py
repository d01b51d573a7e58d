"""The click group, one-line failures, JSON output and progress bars shared by commands."""

import json
import os
import sys
import traceback

import click

from .. import __version__
from ..errors import EdgekdError
from ..kernels.backend import NAMES as BACKENDS

# Optional packages: import name -> (PyPI name, the extra that installs it).
EXTRAS = {"serial": ("pyserial", "serial"), "cobs": ("cobs", "serial"),
          "tflite_micro": ("tflite-micro", "mcu"), "matplotlib": ("matplotlib", "plot"),
          "onnxruntime": ("onnxruntime", "host"), "ai_edge_litert": ("ai-edge-litert", "host"),
          "numba": ("numba", "fast")}
COMMAND_EXTRAS = {"board": "serial,mcu"}   # a command whose every use needs several extras


class Group(click.Group):
    """Turns every failure into one line on stderr and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgekdError as e:
            fail(str(e))
        except ModuleNotFoundError as e:
            top = (e.name or "").partition(".")[0]
            if top not in EXTRAS:
                raise
            package, extra = EXTRAS[top]
            extra = COMMAND_EXTRAS.get(ctx.invoked_subcommand, extra)
            command = f"`edgekd {ctx.invoked_subcommand}`" if ctx.invoked_subcommand else "edgekd"
            fail(f"{command} needs {package}, which is not installed; install it with: "
                 f"pip install 'edgekd[{extra}]'")
        except KeyboardInterrupt:
            click.echo("edgekd: interrupted", err=True)
            sys.exit(130)
        except MemoryError:
            fail("out of memory (a smaller --batch, model or data set may fit)")
        except OSError as e:
            fail(f"{e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}")
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - a bug: still one line, traceback on request
            if os.environ.get("EDGEKD_DEBUG"):
                traceback.print_exc()
            fail(f"internal error: {type(e).__name__}: {e} (set EDGEKD_DEBUG=1 for a traceback)")


def fail(msg):
    click.echo(f"edgekd: error: {' '.join(str(msg).split())}", err=True)
    sys.exit(1)


def emit(result, as_json, human):
    """--json: exactly one JSON object on stdout. Otherwise a human summary."""
    if as_json:
        click.echo(json.dumps(result, default=_jsonable))
    else:
        click.echo(human(result))


def _jsonable(v):
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


class EpochBar:
    """A click progress bar over epochs on stderr, showing the latest metrics. Shown only on a
    terminal, and only from the first finished epoch, so errors before it stay one line."""

    def __init__(self, total, label, keys):
        self.total, self.label, self.keys = total, label, keys
        self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def update(self, metrics):
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = click.progressbar(length=self.total, label=self.label, file=sys.stderr,
                                         show_pos=True, item_show_func=lambda m: m)
            self.bar.__enter__()
        shown = " ".join(f"{k}={metrics[k]:.3f}" if isinstance(metrics[k], float) else
                         f"{k}={metrics[k]}" for k in self.keys if metrics.get(k) is not None)
        self.bar.update(1, shown)


def _use_backend(ctx, param, value):
    from ..kernels import aot, backend
    say = lambda m: click.echo(f"edgekd: {m}", err=True)  # noqa: E731
    if backend.select(value, log=say).name == "numba":
        aot.announce = say
        if aot.unavailable() is None:
            return value  # each model's step is built ahead of time when first used
        if not backend.numba_cache_warm():
            click.echo("edgekd: numba: compiling kernels (once; later runs load them from the "
                       "cache)", err=True)
        backend.warm_up()
    return value


backend_option = click.option(
    "--backend", type=click.Choice(BACKENDS), default=BACKENDS[0], show_default=True,
    callback=_use_backend, expose_value=False,
    help="Kernels: numpy (always there), numba (compiled, faster), auto = numba if installed.")

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object on stdout (progress stays on stderr).")


class Unit(click.ParamType):
    """A quantity with units, parsed by edgekd.design.units (imported only when used)."""

    def __init__(self, name, parser, minimum=None, maximum=None):
        self.name, self.parser, self.minimum, self.maximum = name, parser, minimum, maximum

    def convert(self, value, param, ctx):
        from ..design import units
        try:
            v = value if isinstance(value, (int, float)) else getattr(units, self.parser)(value)
        except EdgekdError as e:
            self.fail(str(e), param, ctx)
        if self.minimum is not None and v < self.minimum:
            self.fail(f"{value} is below the minimum of {self.minimum:,}", param, ctx)
        if self.maximum is not None and v > self.maximum:
            self.fail(f"{value} is above the maximum of {self.maximum:,}", param, ctx)
        return v


BYTES = Unit("SIZE", "parse_bytes")          # 64KiB, 1.5MB, 512
SECONDS = Unit("DURATION", "parse_seconds")  # 90s, 250ms, 2.5


def seconds_at_least(minimum):
    """A duration option (90s, 250ms, or plain seconds) of at least `minimum` seconds."""
    return Unit("DURATION", "parse_seconds", minimum=minimum)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"],
                                          "max_content_width": 100})
@click.version_option(__version__, prog_name="edgekd")
@click.option("--max-params", type=click.IntRange(1), default=None, metavar="N",
              help="Refuse specs and model files with more weights than this [50,000,000; "
                   "or EDGEKD_MAX_PARAMS].")
@click.option("--max-data", default=None, type=BYTES,
              help="Refuse .npz files whose arrays hold more than this uncompressed [2GiB; or "
                   "EDGEKD_MAX_DATA].")
def main(max_params, max_data):
    """edgekd: train small students on small boards by knowledge distillation, with early
    halting that stops streaming what the student has already learned.

    \b
    Typical flow:
      edgekd teacher --spec teacher.json --data digits -o teacher.npz
      edgekd design  --teacher teacher.npz --storage 8KiB -o student.json
      edgekd train   --student student.json --teacher teacher.npz --data digits --out run/
      edgekd eval    run/student.npz --data digits
    or simply `edgekd demo` for all of it on this machine.
    """
    from .. import limits
    limits.set_limits(max_params, max_data)


def load_data(name):
    from ..data import load_dataset
    return load_dataset(name)


def load_spec_file(path):
    from ..nn.spec import load_spec
    return load_spec(path)


def stop_on_signals():
    """SIGINT and SIGTERM raise KeyboardInterrupt, so `kill %1` and Ctrl-C stop a command the
    same way. SIGINT is set too: a shell starts a background job with SIGINT ignored, Python
    then leaves it ignored, and kill -INT would never reach the command."""
    import signal

    def stop(*_):
        raise KeyboardInterrupt
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
