"""`edgekd report`: the table, --json, the PNG and one-line errors, on a real 3-epoch run."""

import json
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd.cli import main
from edgekd.workflows import train_student, train_teacher
from edgekd.data import load_dataset
from edgekd.distill.config import TrainConfig
from edgekd.distill.halting import HaltingConfig
from edgekd.errors import EdgekdError
from edgekd.link.local import LocalSource
from edgekd.report import COLUMNS, load_metrics, plot, summary, text_table
from edgekd.teachers import load_teacher

STUDENT = {"input_shape": [64], "num_classes": 10,
           "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                      {"type": "dense", "units": 10}]}
TEACHER = {"input_shape": [64], "num_classes": 10,
           "layers": [{"type": "dense", "units": 48, "activation": "relu"},
                      {"type": "dense", "units": 10}]}
EPOCHS = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run: a teacher trained on digits, a student distilled from it for 3 epochs."""
    d = tmp_path_factory.mktemp("report")
    digits = load_dataset("digits")
    train_teacher(TEACHER, digits, d / "teacher.npz", epochs=4, batch=32, lr=3e-3)
    cfg = TrainConfig(epochs=EPOCHS, lr=0.01, halting=HaltingConfig(eps=0.2, rho=1.0))
    res = train_student(STUDENT, LocalSource(load_teacher(d / "teacher.npz"), digits), cfg,
                        str(d / "run"), False, None)
    assert res["epochs_run"] == EPOCHS
    return d / "run"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def copy_run(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_load_metrics_reads_every_epoch(run):
    rows = load_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(rows[i]["bytes_down"] < rows[i + 1]["bytes_down"] for i in range(EPOCHS - 1))


def test_text_table_is_aligned_and_carries_the_figures(run):
    rows = load_metrics(run)
    lines = text_table(rows).splitlines()
    assert len(lines) == 2 + EPOCHS
    assert len({len(line) for line in lines}) == 1, "columns are not aligned"
    for c in COLUMNS:
        assert c in lines[0]
    last = rows[-1]
    link = last["bytes_down"] + last["bytes_up"]
    cells = lines[-1].split()
    assert cells[0] == "3"
    assert cells[1] == f"{last['visited']:,}"
    assert cells[2] == f"{100 * last['settled_fraction']:.1f}%"
    assert cells[3] == f"{link:,}" and cells[4] == f"{last['bytes_naive_run']:,}"
    assert cells[5] == f"{100 * link / last['bytes_naive_run']:.1f}%"
    assert cells[6] == f"{last['loss']:.4f}" and cells[7] == f"{last['test_accuracy']:.4f}"


def test_cli_prints_the_table(run):
    r = cli("report", run)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].split()[0] == "epoch"
    assert f"{EPOCHS} epochs" in r.output and "naive" in r.output
    assert "plot ->" not in r.output


def test_cli_json(run):
    r = cli("report", run, "--json")
    assert r.exit_code == 0, r.output
    assert r.output.strip().count("\n") == 0
    out = json.loads(r.output)
    assert set(out) == {"epochs", "summary", "plot"} and out["plot"] is None
    rows = load_metrics(run)
    assert out["epochs"] == rows
    s = out["summary"]
    assert s == json.loads(json.dumps(summary(rows)))
    assert s["epochs"] == EPOCHS and s["last_epoch"] == EPOCHS
    assert s["link_bytes"] == rows[-1]["bytes_down"] + rows[-1]["bytes_up"]
    assert s["bytes_naive_run"] == rows[-1]["bytes_naive_run"]
    assert s["link_ratio"] == pytest.approx(s["link_bytes"] / s["bytes_naive_run"])
    assert s["test_accuracy"] == rows[-1]["test_accuracy"]
    assert s["best_test_accuracy"] == max(r["test_accuracy"] for r in rows)
    assert s["visited"] == sum(r["visited"] for r in rows)


def test_cli_writes_the_png(run, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "report.png"
    r = cli("report", run, "-o", png, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["plot"] == str(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert [p.name for p in png.parent.iterdir()] == ["report.png"]     # no temp file left
    r = cli("report", run, "-o", png)
    assert r.exit_code == 0 and f"plot -> {png}" in r.output


def test_plot_without_matplotlib_says_what_to_install(run, tmp_path, monkeypatch):
    for m in ("matplotlib", "matplotlib.figure", "matplotlib.ticker",
              "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, m, None)
    with pytest.raises(EdgekdError, match=r"pip install 'edgekd\[plot\]'"):
        plot(load_metrics(run), tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


def one_line_error(r):
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error:"), r.output
    return lines[0]


def test_malformed_line_names_its_number(run, tmp_path):
    d = copy_run(run, tmp_path)
    lines = (d / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:40]                       # a torn line
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    msg = one_line_error(cli("report", d))
    assert "metrics.jsonl: line 2 is not valid JSON" in msg


@pytest.mark.parametrize("line, words", [
    ("[1, 2, 3]", "line 1 is not a JSON object"),
    ('{"epoch": 1}', "line 1: 'loss' is missing"),
])
def test_lines_that_are_not_epoch_rows(tmp_path, line, words):
    (tmp_path / "metrics.jsonl").write_text(line + "\n")
    assert words in one_line_error(cli("report", tmp_path))


def test_wrong_type_named(run, tmp_path):
    d = copy_run(run, tmp_path)
    rows = [json.loads(s) for s in (d / "metrics.jsonl").read_text().splitlines()]
    rows[2]["bytes_down"] = "lots"
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "line 3: 'bytes_down' is \"lots\", not a number" in one_line_error(cli("report", d))


def test_empty_and_missing(tmp_path):
    assert "no such run directory" in one_line_error(cli("report", tmp_path / "nope"))
    assert "no metrics.jsonl" in one_line_error(cli("report", tmp_path))
    (tmp_path / "metrics.jsonl").write_text("\n")
    assert "empty" in one_line_error(cli("report", tmp_path))


def test_nan_loss_prints_strict_json(run, tmp_path):
    d = copy_run(run, tmp_path)
    rows = [json.loads(s) for s in (d / "metrics.jsonl").read_text().splitlines()]
    rows[-1]["loss"] = float("nan")
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = cli("report", d, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert out["epochs"][-1]["loss"] is None and out["summary"]["train_loss"] is None
    assert "nan" in cli("report", d).output
    assert np.isnan(load_metrics(d)[-1]["loss"])


def test_the_loss_rise_note_appears_only_when_settling_explains_it():
    """The plot explains a rising train loss (it is over the samples still streamed) only when
    the loss did rise and samples settled meanwhile; a NaN loss is skipped."""
    from edgekd.report import _rises_while_settling

    def rows(losses, settled):
        return [{"loss": v, "settled_fraction": s} for v, s in zip(losses, settled)]
    assert _rises_while_settling(rows([1.0, 0.5, 0.7], [0.0, 0.4, 0.8]))
    assert not _rises_while_settling(rows([1.0, 0.5, 0.4], [0.0, 0.4, 0.8]))    # fell
    assert not _rises_while_settling(rows([1.0, 0.5, 0.7], [0.0, 0.0, 0.0]))    # none settled
    assert not _rises_while_settling(rows([0.5], [0.9]))
    assert _rises_while_settling(rows([1.0, float("nan"), 0.5, 0.6], [0.0, 0.1, 0.2, 0.3]))
