"""`edgekd teacher`, `edgekd train`, `edgekd eval`."""

import os
import shlex
import sys

import click
from click.core import ParameterSource

from ..distill import supervised
from ..distill.config import CHECKPOINT, MAX_ECHO, METRICS, STUDENT, VAL_METRICS, TrainConfig
from ..distill.halting import KEEP, POLICIES, THRESHOLDS, HaltingConfig
from ..distill.optim import LR_SCHEDULES, OPTIMIZERS
from ..errors import EdgekdError
from ..link.codecs import SOFT_CODECS, X_CODECS
from ..link.messages import COMPRESSIONS
from ..link.settings import LinkConfig
from .base import (
    BYTES,
    SECONDS,
    EpochBar,
    backend_option,
    emit,
    json_option,
    load_data,
    load_spec_file,
    main,
    seconds_at_least,
    stop_on_signals,
)

DATA_HELP = "Data set: a built-in name (digits, iris, sensor, fashion-mnist) or an .npz with x_train, y_train, x_test, y_test."


@main.command()
@click.option("--spec", "spec_path", required=True, type=click.Path(dir_okay=False),
              help="Teacher spec JSON (same format as a student's).")
@click.option("--data", required=True, help=DATA_HELP)
@click.option("--epochs", default=supervised.EPOCHS, show_default=True, type=click.IntRange(1))
@click.option("--batch", default=supervised.BATCH, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=supervised.LR, show_default=True,
              type=click.FloatRange(min=0, min_open=True))
@click.option("--optimizer", default=supervised.OPTIMIZER, show_default=True,
              type=click.Choice(OPTIMIZERS))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the teacher .npz.")
@json_option
@backend_option
def teacher(spec_path, data, epochs, batch, lr, optimizer, seed, output, as_json):
    """Train a teacher on hard labels (on the host, where compute is cheap).

    Adam with a cosine-decayed learning rate; writes an .npz that `design` and `train` read.
    """
    from ..workflows import train_teacher
    spec, ds = load_spec_file(spec_path), load_data(data)
    with EpochBar(epochs, "teacher", ["loss", "test_accuracy"]) as bar:
        res = train_teacher(spec, ds, output, epochs, batch, lr, optimizer, seed, bar.update)
    emit(res, as_json, lambda r: f"teacher: test accuracy {r['test_accuracy']:.4f}, "
                                 f"{r['params']} params -> {r['output']}")


def halting_options(f):
    d = HaltingConfig()
    opts = [
        click.option("--halting/--no-halting", default=True, show_default=True,
                     help="Early halting; --no-halting streams every sample every epoch."),
        click.option("--eps", default=d.eps, show_default=True, type=click.FloatRange(0),
                     help="A visit counts towards settling when KL(teacher||student) at "
                          "temperature T is at most this (times the teacher's information on "
                          "the sample, under --threshold relative)..."),
        click.option("--threshold", default=d.threshold, show_default=True,
                     type=click.Choice(THRESHOLDS),
                     help="relative: --eps (and --eps-wake) times the teacher's information on "
                          "the sample, KL(teacher || uniform) at T; absolute: --eps itself."),
        click.option("--patience", default=d.patience, show_default=True, type=click.IntRange(1),
                     help="...and the argmaxes agree, this many visits in a row."),
        click.option("--settle-after", default=d.settle_after, show_default=True,
                     type=click.IntRange(0),
                     help="Epochs that must pass before any sample may settle."),
        click.option("--min-samples", default=d.min_samples, show_default=True,
                     type=click.IntRange(0),
                     help="No sample settles when the training split is smaller than this "
                          "(epoch halting still applies)."),
        click.option("--policy", default=d.policy, show_default=True, type=click.Choice(POLICIES),
                     help="What a settled sample the device keeps gets: skip (no more steps), "
                          "rehearse (replayed with --rehearse-prob per epoch), or wake (as "
                          "rehearse, un-settled when a replay drifts past --eps-wake)."),
        click.option("--keep", default=d.keep, show_default=True, type=click.Choice(KEEP),
                     help="Which samples the device keeps within --cache-budget (a kept sample "
                          "crosses the link once): the first to arrive, or those that settle."),
        click.option("--rehearse-prob", default=d.rehearse_prob, show_default=True,
                     type=click.FloatRange(0, 1), help="Per-epoch rehearsal probability."),
        click.option("--probe-prob", default=d.probe_prob, show_default=True,
                     type=click.FloatRange(0, 1),
                     help="Per epoch, the share of settled samples the device does not keep "
                          "that it asks back as probes; a probe that no longer meets the settle "
                          "rule is streamed again until it settles anew."),
        click.option("--eps-wake", default=d.eps_wake, show_default=True, type=click.FloatRange(0),
                     help="KL above which a rehearsed sample wakes (policy wake)."),
        click.option("--rho", default=d.rho, show_default=True, type=click.FloatRange(0, 1),
                     help="Stop when this fraction of training samples has settled."),
        click.option("--delta", default=d.delta, show_default=True, type=click.FloatRange(0),
                     help="Minimum validation improvement that resets the plateau count."),
        click.option("--patience-epochs", default=d.patience_epochs, show_default=True,
                     type=click.IntRange(1), help="Stop after this many epochs without improvement."),
        click.option("--byte-budget", default=None, type=BYTES,
                     help="Stop when the link has carried this many bytes (e.g. 2MB)."),
        click.option("--time-budget", default=None, type=SECONDS,
                     help="Stop after this long (e.g. 600s)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def make_config(kw):
    h = HaltingConfig(enabled=kw.pop("halting"), eps=kw.pop("eps"), patience=kw.pop("patience"),
                      threshold=kw.pop("threshold"), min_samples=kw.pop("min_samples"),
                      settle_after=kw.pop("settle_after"),
                      policy=kw.pop("policy"), keep=kw.pop("keep"),
                      rehearse_prob=kw.pop("rehearse_prob"), probe_prob=kw.pop("probe_prob"),
                      eps_wake=kw.pop("eps_wake"), rho=kw.pop("rho"), delta=kw.pop("delta"),
                      patience_epochs=kw.pop("patience_epochs"),
                      byte_budget=kw.pop("byte_budget"), time_budget_s=kw.pop("time_budget"))
    kd = not kw.pop("no_kd")
    return TrainConfig(kd=kd, halting=h, **{k: kw.pop(k) for k in (
        "epochs", "batch", "lr", "lr_schedule", "optimizer", "weight_decay", "momentum", "seed",
        "temperature", "alpha", "val_fraction", "val_metric", "restore_best",
        "cache_budget", "echo")}).check()


def make_link_config(kw):
    return LinkConfig.choose(kw.pop("codec"), kw.pop("x_codec"), kw.pop("topk"),
                             kw.pop("compress"))


def training_options(f):
    d = TrainConfig()
    opts = [
        click.option("--epochs", default=d.epochs, show_default=True, type=click.IntRange(1)),
        click.option("--batch", default=d.batch, show_default=True, type=click.IntRange(1)),
        click.option("--lr", default=d.lr, show_default=True, type=click.FloatRange(0, min_open=True)),
        click.option("--lr-schedule", default=d.lr_schedule, show_default=True,
                     type=click.Choice(LR_SCHEDULES),
                     help="cosine decays the rate to 0 over --epochs; constant keeps it."),
        click.option("--optimizer", default=d.optimizer, show_default=True, type=click.Choice(OPTIMIZERS)),
        click.option("--weight-decay", default=d.weight_decay, show_default=True, type=click.FloatRange(0)),
        click.option("--momentum", default=d.momentum, show_default=True, type=click.FloatRange(0, 1),
                     help="For sgd and nesterov."),
        click.option("--seed", default=d.seed, show_default=True, type=int,
                     help="Seeds weights, epoch order, dropout and rehearsal: same seed, same weights."),
        click.option("--temperature", "-T", default=d.temperature, show_default=True,
                     type=click.FloatRange(0, min_open=True), help="KD temperature."),
        click.option("--alpha", default=d.alpha, show_default=True, type=click.FloatRange(0, 1),
                     help="Weight of the KD term; 1-alpha weighs cross-entropy on hard labels."),
        click.option("--no-kd", is_flag=True, help="Baseline: hard labels only (alpha 0)."),
        click.option("--val-fraction", default=d.val_fraction, show_default=True,
                     type=click.FloatRange(0, 1, max_open=True),
                     help="Training samples held out for the plateau test (0 disables it)."),
        click.option("--val-metric", default=d.val_metric, show_default=True,
                     type=click.Choice(VAL_METRICS),
                     help="Validation signal: accuracy on labels, argmax agreement with the "
                          "teacher, or KL to the teacher (smooth)."),
        click.option("--echo", default=d.echo, show_default=True,
                     type=click.IntRange(1, MAX_ECHO),
                     help="Steps in a row on each batch (data echoing): a streamed row that "
                          "cost link bytes buys this many steps, so fewer epochs' worth of "
                          "bytes train the student as far. 1 trains each batch once."),
        click.option("--restore-best/--last", "restore_best", default=d.restore_best,
                     show_default=True,
                     help="End with the weights of the best validation epoch, or the last ones."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return halting_options(f)


def saved_text(link, run, planned, epochs_run, epochs_planned):
    """'x% saved' against naive streaming of the epochs run, and of the epochs planned when a
    halt ended the run early: two figures, each named."""
    def saved(naive):
        return f"{1 - link / naive:.1%}" if naive else "-"
    text = f"{link:,} bytes vs {run:,} naive for the {epochs_run} epochs run ({saved(run)} saved)"
    if planned != run:
        text += f", {saved(planned)} saved vs the {epochs_planned} planned"
    return text


def summary_text(r):
    link = r["bytes_down"] + r["bytes_up"]
    acc = "n/a (the host keeps its test split)" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
    return (f"test accuracy {acc} after {r['epochs_run']} epochs "
            f"({r['stop_reason']})\n"
            f"link: {saved_text(link, r['bytes_naive_run'], r['bytes_naive_planned'], r['epochs_run'], r['epochs_planned'])}; "
            f"settled {r['settled_fraction']:.1%}\n"
            f"{r['train_samples_per_s']:,.0f} samples/s, peak RSS {r['peak_rss_mib']} MiB, "
            f"{r['wall_s']:.1f} s -> {r['output']}")


def link_options(f):
    d = LinkConfig()
    opts = [
        click.option("--codec", default=d.codec, show_default=True, type=click.Choice(SOFT_CODECS),
                     help="Soft labels on the link: f32, f16, or topk (k largest logits as int8)."),
        click.option("--x-codec", default=None, type=click.Choice(X_CODECS),
                     help=f"Inputs on the link [{d.x_codec}; f32 when --codec is f32]."),
        click.option("--topk", default=d.topk, show_default=True, type=click.IntRange(1, 255),
                     help="k for --codec topk."),
        click.option("--compress", default=None, type=click.Choice(COMPRESSIONS),
                     help=f"BATCH payloads on the link: zlib or none [{d.compress}; none "
                          "when --codec is f32]."),
        click.option("--connect", metavar="HOST:PORT",
                     help="Stream from an `edgekd serve` host (this process is the device)."),
        click.option("--token", envvar="EDGEKD_TOKEN", help="Shared secret (or EDGEKD_TOKEN)."),
        click.option("--tls-fingerprint", metavar="SHA256",
                     help="Talk TLS and accept only the host certificate with this SHA-256 "
                          "fingerprint (`edgekd tls init` prints it)."),
        click.option("--tls-ca", type=click.Path(dir_okay=False),
                     help="Talk TLS and verify the host against this CA file (and its name)."),
        click.option("--window", default=4, show_default=True, type=click.IntRange(1, 64),
                     help="Batches the host may send ahead of the device's acknowledgements."),
        click.option("--retries", default=8, show_default=True, type=click.IntRange(0),
                     help="Connection attempts in a row without training progress (exponential "
                          "backoff) before giving up: a host not up yet, drops, a busy host."),
        click.option("--timeout", default=30.0, show_default=True, type=seconds_at_least(0.1),
                     help="Seconds without a byte from the host before the link counts as lost."),
        click.option("--cache-budget", default="1MiB", show_default=True, type=BYTES,
                     help="Bytes the device may spend keeping samples as they arrived (inputs "
                          "and soft labels, encoded; device-data mode: soft labels). A kept "
                          "sample is never sent again. 0 keeps nothing."),
        click.option("--fetch-once", is_flag=True,
                     help="Keep the first epoch's samples in memory and train later epochs "
                          "offline (for devices with RAM for the whole training split)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def parse_hostport(text):
    host, sep, port = (text or "").rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise EdgekdError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def make_source(link, codecs, teacher_path, data, spec):
    """What the trainer reads from, speaking `codecs` (a LinkConfig): a host over TCP
    (host-data, or device-data when the device has --data), or, without --connect, a host in
    this process; --fetch-once wraps it. The student `spec` is checked against the local data
    and teacher first."""
    source = _make_source(link, codecs.source_kwargs(), teacher_path, data, spec)
    if not link["fetch_once"]:
        return source
    from ..link.fetch_once import FetchOnceSource
    return FetchOnceSource(source)


def _make_source(link, codecs, teacher_path, data, spec):
    from ..workflows import check_student
    if link["connect"] is None:
        if not teacher_path or not data:
            raise EdgekdError("give --teacher and --data (in-process), or --connect HOST:PORT")
        from ..link.local import LocalSource
        from ..teachers import load_teacher
        ds = load_data(data)
        check_student(spec, ds)
        t = load_teacher(teacher_path, ds)
        check_student(spec, teacher=t)
        return LocalSource(t, ds, window=link["window"], **codecs)
    if teacher_path:
        raise EdgekdError("--teacher belongs to the host (`edgekd serve`), not to --connect")
    from ..link.transport import dial_tcp, is_loopback
    host, port = parse_hostport(link["connect"])
    opts = {"token": link["token"], "window": link["window"], "retries": link["retries"],
            "log": lambda msg: click.echo(f"edgekd: {msg}", err=True)}
    tls = None
    if link["tls_ca"] or link["tls_fingerprint"]:
        from ..link.tls import ClientTls
        tls = ClientTls(link["tls_ca"], link["tls_fingerprint"])
    elif not is_loopback(host):
        # plain TCP off this machine: a relay or an on-path rewriter would pass for the host
        raise EdgekdError(f"{host} is not on loopback: pin the host with --tls-fingerprint "
                          f"(`edgekd tls fingerprint` on the host prints it) or --tls-ca")

    def dial():
        return dial_tcp(host, port, link["timeout"], tls)

    if data:
        from ..link.device_data import DeviceDataSource
        ds, budget = load_data(data), link["cache_budget"]
        check_student(spec, ds)
        return DeviceDataSource(dial, ds, budget, **codecs, **opts)
    from ..link.client import LinkSource
    return LinkSource(dial, **codecs, **opts)


TRAIN_HELP = f"""Distill a teacher into a student, with early halting.

    \b
    In-process:  --teacher T --data D (host and device in this process, real frames)
    On a device: --connect HOST:PORT (the host runs `edgekd serve`)
    Device-data: --connect HOST:PORT --data LOCAL (inputs stay here; only uploads for labels)

    Writes OUT/{STUDENT}, OUT/{METRICS} (one line per epoch) and OUT/{CHECKPOINT}
    (every epoch, atomically). bytes_down/bytes_up are what the link really carried.
    """


@main.command(help=TRAIN_HELP)
@click.option("--student", "student_path", required=True, type=click.Path(dir_okay=False),
              help="Student spec JSON (from `edgekd design` or written by hand).")
@click.option("--teacher", "teacher_path", type=click.Path(dir_okay=False),
              help="Teacher .npz (in-process runs; with --connect the host has the teacher).")
@click.option("--data", help=DATA_HELP + " With --connect: the device's own data (device-data mode).")
@training_options
@link_options
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint (its saved settings win).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help=f"Run directory: {STUDENT}, {METRICS}, {CHECKPOINT}.")
@json_option
@backend_option
def train(student_path, teacher_path, data, resume, out, as_json, **kw):
    """`edgekd train` (its help is TRAIN_HELP)."""
    from ..workflows import train_student
    link = {k: kw.pop(k) for k in ("connect", "token", "window", "retries", "timeout",
                                   "fetch_once", "tls_ca", "tls_fingerprint")}
    link["cache_budget"] = kw["cache_budget"]
    cfg, codecs = make_config(kw), make_link_config(kw)
    spec = load_spec_file(student_path)
    checkpoint = None
    if resume:   # the run goes on with the settings it started with
        from ..distill.checkpoint import load_checkpoint
        checkpoint = load_checkpoint(out)
        warn_overridden(click.get_current_context(), cfg, codecs, checkpoint)
        cfg, codecs = checkpoint.cfg, LinkConfig.from_dict(checkpoint.link)
    source = make_source(link, codecs, teacher_path, data, spec)
    stop_on_signals()
    try:
        with EpochBar(cfg.epochs, "train", ["loss", "test_accuracy", "settled_fraction"]) as bar:
            res = train_student(spec, source, cfg, out, checkpoint, bar.update)
    except KeyboardInterrupt:
        how_to_resume(out)
    emit(res, as_json, summary_text)


# flags whose config field is not named like the flag
FLAG_FIELDS = {"halting": "halting.enabled", "time_budget": "halting.time_budget_s",
               "no_kd": "kd"}
HALTING_FLAGS = ("eps", "threshold", "patience", "settle_after", "min_samples", "policy",
                 "keep", "rehearse_prob", "probe_prob", "eps_wake", "rho", "delta", "patience_epochs", "byte_budget")


def warn_overridden(ctx, cfg, codecs, checkpoint):
    """--resume continues a run with the settings it started with: name every flag given
    now that they override, so nothing is ignored silently."""
    saved = _flat({**checkpoint.cfg.to_dict(), **LinkConfig.from_dict(checkpoint.link).to_dict()})
    given = _flat({**cfg.to_dict(), **codecs.to_dict()})
    ignored = []
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        key = FLAG_FIELDS.get(name) or (f"halting.{name}" if name in HALTING_FLAGS else name)
        if key in saved and saved[key] != given.get(key):
            flag = "--" + name.replace("_", "-")
            ignored.append(f"{flag} {given.get(key)} (the run has {saved[key]})")
    if ignored:
        click.echo(f"edgekd: --resume keeps the run's own settings; ignored: "
                   f"{', '.join(ignored)}", err=True)


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def how_to_resume(out):
    """Ctrl-C or SIGTERM: say what is on disk and how to go on, then exit 130 as shells expect."""
    args = [a for a in sys.argv[1:] if a != "--resume"]
    again = shlex.join(["edgekd", *args, "--resume"])
    if os.path.exists(os.path.join(out, CHECKPOINT)):
        click.echo(f"edgekd: interrupted; {os.path.join(out, STUDENT)} holds the best "
                   f"weights so far. Continue with: {again}", err=True)
    else:
        click.echo("edgekd: interrupted before the first epoch finished; nothing to resume",
                   err=True)
    sys.exit(130)


@main.command("eval")
@click.argument("model_path", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help=DATA_HELP)
@json_option
@backend_option
def eval_(model_path, data, as_json):
    """Test accuracy and single-sample latency of a saved model (student or teacher)."""
    from ..workflows import evaluate
    res = evaluate(model_path, load_data(data))
    emit(res, as_json, lambda r: f"test accuracy {r['test_accuracy']:.4f} on {r['samples']} "
                                 f"samples, latency {r['latency_s'] * 1e6:.1f} us per sample")
