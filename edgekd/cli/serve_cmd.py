"""`edgekd serve`: the host streaming script (teacher + data set, many devices at once)."""

import json
import signal
import sys

import click

from .base import backend_option, load_data, main
from .train_cmd import DATA_HELP, parse_hostport


@main.command()
@click.option("--teacher", "teacher_path", required=True, type=click.Path(dir_okay=False),
              help="Teacher: edgekd .npz, .onnx, .tflite, or precomputed logits .npy.")
@click.option("--data", required=True, help=DATA_HELP)
@click.option("--bind", default="127.0.0.1:7707", show_default=True, metavar="HOST:PORT",
              help="Address to listen on (port 0 picks a free one). Non-loopback needs --token.")
@click.option("--token", envvar="EDGEKD_TOKEN",
              help="Shared secret; devices prove they know it (HMAC challenge). Or EDGEKD_TOKEN.")
@click.option("--max-devices", default=8, show_default=True, type=click.IntRange(1),
              help="Devices served at once; more are refused with an error.")
@click.option("--idle-timeout", default=60.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds a device may stay silent (or stop reading) before it is dropped.")
@click.option("--frame-timeout", default=30.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds a started frame may take to arrive in full (slow-sender guard).")
@click.option("--json", "as_json", is_flag=True,
              help="First stdout line is JSON {host, port}; session logs stay on stderr.")
@backend_option
def serve(teacher_path, data, bind, token, max_devices, idle_timeout, frame_timeout, as_json):
    """Serve a teacher's soft labels to devices running `edgekd train --connect`.

    Teacher outputs are computed only for samples that are sent, so halted samples cost the
    host nothing. One log line per session on stderr. Ctrl-C stops it.
    """
    from ..link.server import Server
    from ..teachers import load_teacher
    host, port = parse_hostport(bind)
    ds = load_data(data)
    teacher = load_teacher(teacher_path, ds)
    srv = Server(teacher, ds, host, port, token, max_devices, idle_timeout, frame_timeout,
                 log=lambda line: click.echo(f"edgekd serve: {line}", err=True))
    h, p = srv.address
    click.echo(json.dumps({"host": h, "port": p}) if as_json else f"listening on {h}:{p}")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        click.echo("edgekd serve: stopped", err=True)
    finally:
        srv.shutdown()
