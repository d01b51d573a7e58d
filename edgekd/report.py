"""What a training run did, from its `metrics.jsonl`: a plain-text table, a summary, a plot.

`edgekd train --out DIR` appends one JSON object per finished epoch to DIR/metrics.jsonl. The
link figures there are cumulative: `bytes_down + bytes_up` is what the link has carried so far,
`bytes_naive_run` what streaming every sample as float32 for the epochs run so far would have
cost, and `bytes_naive_planned` the same for every epoch the run planned (a halted run saves
against both; the summary names each). matplotlib (the `plot` extra) is needed only for the plot and imported only there.
"""

import json
import math
import os

from .distill.config import METRICS
from .errors import EdgekdError
from .fileio import atomic_path, drop_torn_tail

# keys the table and the plot read; a line without one of them is not from `edgekd train`
REQUIRED = ("epoch", "loss", "test_accuracy", "visited", "settled_fraction", "bytes_down",
            "bytes_up", "bytes_naive_run")
LEGACY = {"bytes_naive": "bytes_naive_run"}   # names in metrics written by older versions


def load_metrics(run_dir):
    """The epoch rows of run_dir/metrics.jsonl, in file order; one-line EdgekdError otherwise."""
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise EdgekdError(f"{run_dir}: no such run directory")
    path = os.path.join(run_dir, METRICS)
    if not os.path.isfile(path):
        raise EdgekdError(f"{run_dir}: no {METRICS} here (write one with "
                          f"`edgekd train --out {run_dir}`)")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise EdgekdError(f"{path}: not a text file") from None
    rows = []
    lines = drop_torn_tail(lines)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise EdgekdError(f"{where} is not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise EdgekdError(f"{where} is not a JSON object")
        for old, new in LEGACY.items():
            if old in row and new not in row:
                row[new] = row.pop(old)
        for key in REQUIRED:
            v = row.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                what = "is missing" if key not in row else f"is {json.dumps(v)}, not a number"
                raise EdgekdError(f"{where}: {key!r} {what}")
        rows.append(row)
    if not rows:
        raise EdgekdError(f"{path}: empty: no epoch has finished yet")
    return rows


def link_bytes(row):
    return row["bytes_down"] + row["bytes_up"]


def _ratio(a, b):
    return a / b if b else None


def summary(rows):
    """The run in one object: the last epoch's cumulative figures and the best test accuracy."""
    last = rows[-1]
    best = max(rows, key=lambda r: _finite_or(r["test_accuracy"], -1.0))
    link, naive = link_bytes(last), last["bytes_naive_run"]
    planned = last.get("bytes_naive_planned")
    ratio, ratio_planned = _ratio(link, naive), _ratio(link, planned or 0)
    return {
        "epochs": len(rows), "last_epoch": last["epoch"], "stop": last.get("stop"),
        "link_bytes": link, "bytes_down": last["bytes_down"], "bytes_up": last["bytes_up"],
        "bytes_naive_run": naive, "bytes_naive_planned": planned, "link_ratio": ratio,
        "bytes_saved_fraction_run": None if ratio is None else 1 - ratio,
        "bytes_saved_fraction_planned": None if ratio_planned is None else 1 - ratio_planned,
        "settled_fraction": last["settled_fraction"],
        "visited": sum(r["visited"] for r in rows),
        "train_loss": last["loss"], "test_accuracy": last["test_accuracy"],
        "best_test_accuracy": best["test_accuracy"], "best_test_epoch": best["epoch"],
        "wall_s": sum(r.get("epoch_s") or 0 for r in rows),
    }


def _percent_decimals(fractions):
    """Enough decimals that ticks over this range read differently (94.1% 94.2%, not 94% 94%)."""
    vals = [100 * v for v in fractions if math.isfinite(v)]
    span = max(vals) - min(vals) if vals else 0
    return 0 if span >= 5 else 1 if span >= 0.5 else 2


def _rises_while_settling(rows):
    loss = [r["loss"] for r in rows if _finite_or(r["loss"], None) is not None]
    return (len(loss) >= 2 and loss[-1] > min(loss)
            and rows[-1]["settled_fraction"] > rows[0]["settled_fraction"])


def _finite_or(v, default):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else default


def _num(v, fmt):
    return "-" if v is None else format(v, fmt)


COLUMNS = ("epoch", "visited", "settled", "link bytes", "naive bytes", "link/naive",
           "train loss", "test acc")


def text_table(rows):
    """An aligned plain-text table, one line per epoch: link bytes are cumulative."""
    body = []
    for r in rows:
        ratio = _ratio(link_bytes(r), r["bytes_naive_run"])
        body.append((str(r["epoch"]), f"{r['visited']:,}", f"{100 * r['settled_fraction']:.1f}%",
                     f"{link_bytes(r):,}", f"{r['bytes_naive_run']:,}",
                     "-" if ratio is None else f"{100 * ratio:.1f}%",
                     _num(r["loss"], ".4f"), _num(r["test_accuracy"], ".4f")))
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(COLUMNS)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    lines = [fmt.format(*COLUMNS), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*b) for b in body]
    return "\n".join(lines)


def summary_text(s):
    ratio, saved_planned = s["link_ratio"], s["bytes_saved_fraction_planned"]
    link = (f"link {s['link_bytes']:,} bytes vs {s['bytes_naive_run']:,} naive for the "
            f"{s['epochs']} epochs run"
            + ("" if ratio is None else f" ({100 * ratio:.1f}%, {100 * (1 - ratio):.1f}% saved)")
            + ("" if saved_planned is None or s["bytes_naive_planned"] == s["bytes_naive_run"]
               else f", {100 * saved_planned:.1f}% saved vs all epochs planned"))
    stop = f", stopped: {s['stop']}" if s["stop"] else ""
    return (f"{s['epochs']} epochs{stop}\n{link}; settled {100 * s['settled_fraction']:.1f}%\n"
            f"test accuracy {_num(s['test_accuracy'], '.4f')} at the last epoch, best "
            f"{_num(s['best_test_accuracy'], '.4f')} at epoch {s['best_test_epoch']}")


def jsonable(obj):
    """NaN/inf (a diverged loss) become null: --json prints strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def plot(rows, path, title=None):
    """Four panels (link bytes vs naive, settled fraction, samples visited, loss and accuracy)
    as a PNG at `path`, written atomically. Needs matplotlib; uses its Agg canvas directly, so
    no GUI backend is touched and pyplot's global state is left alone."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise EdgekdError("the plot needs matplotlib, which is not installed: "
                          "pip install 'edgekd[plot]'") from None
    path = os.fspath(path)
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(11, 7.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    (ax_bytes, ax_settled), (ax_visited, ax_loss) = fig.subplots(2, 2, sharex=True)
    s = summary(rows)
    _bytes_panel(ax_bytes, epochs, rows, s)
    _settled_panel(ax_settled, epochs, rows)
    _visited_panel(ax_visited, epochs, rows)
    _loss_panel(ax_loss, epochs, rows)
    for ax in (ax_bytes, ax_settled, ax_visited, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    head = f"{title}: " if title else ""
    saved = "" if s["link_ratio"] is None else f", link {100 * s['link_ratio']:.1f}% of naive"
    fig.suptitle(f"{head}{s['epochs']} epochs{saved}, settled {100 * s['settled_fraction']:.1f}%, "
                 f"test accuracy {_num(s['test_accuracy'], '.4f')}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _bytes_panel(ax, epochs, rows, s):
    """Cumulative link bytes against naive streaming, the saving shaded."""
    from matplotlib.ticker import FuncFormatter
    link = [link_bytes(r) for r in rows]
    naive = [r["bytes_naive_run"] for r in rows]
    ax.plot(epochs, naive, "--", color="0.45", marker=".", label="naive streaming (float32)")
    ax.plot(epochs, link, color="C0", marker="o", ms=4, label="link (down + up)")
    ax.fill_between(epochs, link, naive, where=[a <= b for a, b in zip(link, naive)],
                    color="C0", alpha=0.12, interpolate=True, label="saved")
    ax.set_title("Cumulative bytes on the link")
    ax.set_ylabel("MB (10^6 bytes)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:g}"))
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize="small")
    if s["link_ratio"] is not None:
        ax.annotate(f"{100 * s['link_ratio']:.1f}% of naive", (epochs[-1], link[-1]),
                    textcoords="offset points", xytext=(-6, -14), ha="right", fontsize="small")


def _settled_panel(ax, epochs, rows):
    from matplotlib.ticker import PercentFormatter
    ax.plot(epochs, [100 * r["settled_fraction"] for r in rows], color="C2", marker="o", ms=4)
    ax.set_title("Settled samples (halted on the link)")
    ax.set_ylabel("% of training samples")
    ax.set_ylim(-2, 102)
    ax.yaxis.set_major_formatter(PercentFormatter())


def _visited_panel(ax, epochs, rows):
    visited = [r["visited"] for r in rows]
    rehearsed = [r.get("rehearsed") or 0 for r in rows]
    ax.bar(epochs, visited, color="C1", label="streamed")
    if any(rehearsed):
        ax.bar(epochs, rehearsed, bottom=visited, color="C4", label="rehearsed (cache)")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_title("Samples trained on per epoch")
    ax.set_ylabel("samples")
    ax.set_xlabel("epoch")


def _loss_panel(ax, epochs, rows):
    """Train loss, and test accuracy on a twin axis."""
    from matplotlib.ticker import PercentFormatter
    ax.plot(epochs, [_finite_or(r["loss"], math.nan) for r in rows], color="C3", marker="o",
            ms=4, label="train loss")
    ax.set_title("Train loss and test accuracy")
    if _rises_while_settling(rows):
        ax.annotate("train loss is over the samples still streamed:\nit rises as only "
                    "hard ones remain", (0.02, 0.04), xycoords="axes fraction",
                    fontsize="x-small", color="C3")
    ax.set_ylabel("train loss (KD)", color="C3")
    ax.set_xlabel("epoch")
    ax_acc = ax.twinx()
    acc = [_finite_or(r["test_accuracy"], math.nan) for r in rows]
    ax_acc.plot(epochs, [100 * a for a in acc], color="C0", marker="s", ms=4,
                label="test accuracy")
    ax_acc.set_ylabel("test accuracy", color="C0")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(decimals=_percent_decimals(acc)))
    handles = ax.get_legend_handles_labels()[0] + ax_acc.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="center right", fontsize="small")
