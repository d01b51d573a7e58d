"""`edgekd serve`: the host streaming script (teacher + data set, many devices at once)."""

import json
import sys

import click

from ..errors import EdgekdError
from .base import backend_option, load_data, main, seconds_at_least, stop_on_signals
from .train_cmd import DATA_HELP, parse_hostport


@main.command()
@click.option("--teacher", "teacher_path", required=True, type=click.Path(dir_okay=False),
              help="Teacher: edgekd .npz, .onnx, .tflite, or precomputed logits .npy.")
@click.option("--data", required=True, help=DATA_HELP)
@click.option("--bind", default="127.0.0.1:7707", show_default=True, metavar="HOST:PORT",
              help="Address to listen on (port 0 picks a free one; [::1]:P for IPv6). "
                   "Non-loopback needs --tls-cert/--tls-key and --token.")
@click.option("--token", envvar="EDGEKD_TOKEN",
              help="Shared secret; devices prove they know it (HMAC challenge), loopback ones "
                   "too. At least 128 bits (`edgekd tls token`). Or EDGEKD_TOKEN.")
@click.option("--weak-token", is_flag=True,
              help="Accept a token under 128 bits of entropy (a trusted network only).")
@click.option("--tls-cert", type=click.Path(dir_okay=False),
              help="TLS certificate (PEM), e.g. from `edgekd tls init`; the link runs inside TLS.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="TLS private key (PEM).")
@click.option("--max-pending", default=16, show_default=True, type=click.IntRange(1),
              help="Connections that have not authenticated yet, at once; a new one beyond "
                   "this closes the one waiting longest (of the address holding the most).")
@click.option("--handshake-timeout", default=10.0, show_default=True, type=seconds_at_least(0.1),
              help="Seconds a new connection has for TLS and its HELLO before it is closed.")
@click.option("--no-test-split", "no_test_split", is_flag=True,
              help="Keep the test split (with its labels) on the host: devices report no test accuracy.")
@click.option("--max-devices", default=8, show_default=True, type=click.IntRange(1),
              help="Authenticated devices served at once; more are told the host is busy "
                   "(they back off and retry).")
@click.option("--idle-timeout", default=60.0, show_default=True, type=seconds_at_least(0.1),
              help="Seconds a device may stay silent, stop reading, or make no training "
                   "progress (whatever else it sends) before it is dropped.")
@click.option("--frame-timeout", default=30.0, show_default=True, type=seconds_at_least(0.1),
              help="Seconds a started frame may take to arrive in full (slow-sender guard).")
@click.option("--json", "as_json", is_flag=True,
              help="First stdout line is JSON {host, port}; session logs stay on stderr.")
@backend_option
def serve(teacher_path, data, bind, token, max_devices, idle_timeout, frame_timeout, as_json,
          weak_token, tls_cert, tls_key, max_pending, handshake_timeout, no_test_split):
    """Serve a teacher's soft labels to devices running `edgekd train --connect`.

    Teacher outputs are computed only for samples that are sent, so halted samples cost the
    host nothing. One log line per session on stderr. Ctrl-C stops it.
    """
    from ..link.server import SoftLabelServer
    from ..teachers import load_teacher
    host, port = parse_hostport(bind)
    tls = None
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise EdgekdError("give both --tls-cert and --tls-key")
        from ..link.tls import server_context
        tls = server_context(tls_cert, tls_key)
    ds = load_data(data)
    teacher = load_teacher(teacher_path, ds)
    teacher.logits(ds.x_train[:1])  # a compiled teacher is built or loaded before a device waits
    srv = SoftLabelServer(teacher, ds, host, port, token, max_devices, idle_timeout, frame_timeout,
                 log=lambda line: click.echo(f"edgekd serve: {line}", err=True), tls=tls,
                 weak_token=weak_token, max_pending=max_pending,
                 handshake_timeout_s=handshake_timeout, test_split=not no_test_split)
    if srv.open_warning:
        click.echo(f"edgekd serve: warning: {srv.open_warning}", err=True)
    h, p = srv.address
    click.echo(json.dumps({"host": h, "port": p}) if as_json else f"listening on {h}:{p}")
    sys.stdout.flush()
    stop_on_signals()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        click.echo("edgekd serve: stopped", err=True)
    finally:
        srv.shutdown()
