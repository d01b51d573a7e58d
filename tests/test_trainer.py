"""The KD trainer end to end on the in-process link: halting saves bytes, resume is exact."""

import json

import numpy as np
import pytest

from edgekd.workflows import train_student
from edgekd.distill.checkpoint import load_checkpoint
from edgekd.distill.config import TrainConfig
from edgekd.distill.halting import HaltingConfig
from edgekd.source import Hello
from edgekd.errors import EdgekdError
from edgekd.link.local import LocalSource
from edgekd.nn.io import load_model
from edgekd.teachers import load_teacher

STUDENT = {"input_shape": [64], "num_classes": 10,
           "layers": [{"type": "dense", "units": 24, "activation": "relu"},
                      {"type": "dropout", "rate": 0.1},
                      {"type": "dense", "units": 10}]}


def run(teacher, digits, out, resume=False, on_epoch=None, **kw):
    halting = kw.pop("halting", {})
    cfg = TrainConfig(**{"epochs": 6, "lr": 0.01, **kw}, halting=HaltingConfig(**halting))
    checkpoint = load_checkpoint(str(out)) if resume else None
    return train_student(STUDENT, LocalSource(teacher, digits), cfg, str(out), checkpoint, on_epoch)


def test_halting_saves_bytes_and_keeps_accuracy(teacher, digits, tmp_path):
    # a device that keeps nothing: every byte saved is halting's
    full = run(teacher, digits, tmp_path / "full", halting={"enabled": False}, epochs=10,
               cache_budget=0)
    halt = run(teacher, digits, tmp_path / "halt", epochs=10, halting={"eps": 0.1, "rho": 1.0},
               cache_budget=0)
    assert full["settled_fraction"] == 0 and full["epochs_run"] == 10
    # the naive figure is exactly what streaming everything costs (plus the val slice, STOP)
    assert full["bytes_down"] + full["bytes_up"] >= full["bytes_naive_run"]
    assert halt["bytes_naive_planned"] == full["bytes_naive_planned"]
    assert halt["bytes_down"] < 0.8 * full["bytes_down"]
    assert halt["settled_fraction"] > 0.3
    assert halt["test_accuracy"] > full["test_accuracy"] - 0.05


def test_outputs_metrics_and_eval_agree(teacher, digits, tmp_path):
    res = run(teacher, digits, tmp_path)
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == list(range(1, res["epochs_run"] + 1))
    for key in ("loss", "test_accuracy", "visited", "settled", "bytes_down", "bytes_naive_run"):
        assert key in lines[0]
    model, meta, _ = load_model(tmp_path / "student.npz")
    assert model.weights_sha256() == res["weights_sha256"]
    acc = float((model.predict(digits.x_test).argmax(1) == digits.y_test).mean())
    assert acc == res["test_accuracy"] == meta["test_accuracy"] == lines[-1]["test_accuracy"]


def test_same_seed_same_weights_other_seed_differs(teacher, digits, tmp_path):
    a = run(teacher, digits, tmp_path / "a", epochs=3)
    b = run(teacher, digits, tmp_path / "b", epochs=3)
    c = run(teacher, digits, tmp_path / "c", epochs=3, seed=1)
    assert a["weights_sha256"] == b["weights_sha256"] != c["weights_sha256"]


class Killed(Exception):
    pass


@pytest.mark.parametrize("policy,keep,budget,probe", [
    ("skip", "first", 0, 0.0), ("rehearse", "first", 1 << 20, 0.0),
    ("wake", "settled", 40_000, 0.0), ("rehearse", "first", 40_000, 0.0),
    ("rehearse", "first", 20_000, 0.3)])
def test_resume_after_a_crash_gives_the_same_weights(teacher, digits, tmp_path, policy, keep,
                                                     budget, probe):
    """Nothing kept, everything kept, and a third of the split kept (the rest streamed); and
    probes of settled samples not kept (asked back before each epoch)."""
    halting = {"eps": 0.2, "policy": policy, "rehearse_prob": 0.5, "eps_wake": 0.25, "rho": 1.0,
               "keep": keep, "probe_prob": probe}
    clean = run(teacher, digits, tmp_path / "clean", halting=halting, optimizer="nesterov",
                cache_budget=budget)

    def crash(metrics):
        if metrics["epoch"] == 3:
            raise Killed

    with pytest.raises(Killed):
        run(teacher, digits, tmp_path / "crash", halting=halting, optimizer="nesterov",
            on_epoch=crash, cache_budget=budget)
    resumed = run(teacher, digits, tmp_path / "crash", resume=True, halting=halting,
                  optimizer="nesterov", cache_budget=budget)
    assert resumed["weights_sha256"] == clean["weights_sha256"]
    assert resumed["kept_bytes"] == clean["kept_bytes"] <= budget
    assert resumed["epochs_run"] == clean["epochs_run"]
    assert resumed["bytes_down"] > clean["bytes_down"]  # the resumed run re-fetched eval data
    lines = (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == list(range(1, clean["epochs_run"] + 1))
    if probe:
        epochs = [json.loads(s) for s in lines]
        assert sum(e["probed"] for e in epochs) > 0 and sum(e["woken"] for e in epochs) > 0


def test_what_the_device_keeps_changes_the_bytes_and_not_the_weights(teacher, digits, tmp_path):
    """Without halting, keeping nothing, a part, or all of the split trains on the same
    batches in the same order (kept samples are replayed where the host would have streamed
    them), so the weights are bit-identical; the link carries each kept sample once. (The
    teacher is a table of logits: a network's logits may differ in the last bit with the
    batch a row is computed in, and a kept row keeps the logits of its first batch.)"""
    np.save(tmp_path / "logits.npy", teacher.logits(digits.x_train))
    table = load_teacher(str(tmp_path / "logits.npy"), digits)
    runs = {b: run(table, digits, tmp_path / str(b), halting={"enabled": False},
                   cache_budget=b) for b in (0, 30_000, 1 << 30)}
    assert len({r["weights_sha256"] for r in runs.values()}) == 1
    none, part, every = (runs[b] for b in (0, 30_000, 1 << 30))
    assert none["kept_bytes"] == 0 < part["kept_bytes"] <= 30_000 < every["kept_bytes"]
    assert every["bytes_down"] < part["bytes_down"] < none["bytes_down"]
    # everything kept: one epoch's worth of batches, whatever the number of epochs
    assert every["bytes_down"] < 1.5 * none["bytes_down"] / none["epochs_run"]


def test_a_checkpoint_from_before_the_link_settings_split_resumes_the_same(teacher, digits,
                                                                          tmp_path):
    """Older checkpoints kept the codecs inside the training config, had no "link" entry and
    no echo: they still load, their codecs read back as the link settings, echo reads as 1,
    and the run ends the same."""
    clean = run(teacher, digits, tmp_path / "clean", epochs=4, echo=1)

    def crash(metrics):
        if metrics["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        run(teacher, digits, tmp_path / "old", epochs=4, on_epoch=crash, echo=1)
    path = tmp_path / "old" / "checkpoint.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["trainer"]["config"]["echo"]   # nor the echo: they trained each batch once
    link = meta["trainer"].pop("link")
    assert link == {"codec": "f32", "x_codec": "f32", "topk": 4, "compress": "none"}
    del link["compress"]                  # older checkpoints knew only the codecs
    meta["trainer"]["config"].update(link)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    ck = load_checkpoint(str(tmp_path / "old"))
    assert ck.link == link and ck.epoch == 2
    resumed = run(teacher, digits, tmp_path / "old", resume=True, epochs=4)
    assert resumed["weights_sha256"] == clean["weights_sha256"]


def test_echo_takes_that_many_steps_on_each_batch_and_halting_sees_the_first(teacher, digits,
                                                                             tmp_path):
    """--echo N trains each batch N times in a row: N times the optimizer steps of echo 1 on
    the same batches (checkpointed step counts), a different student, and the same batches
    streamed in epoch 1, and a student that learns faster per byte."""
    runs = {e: run(teacher, digits, tmp_path / str(e), epochs=2, echo=e, cache_budget=0,
                   halting={"eps": 0.5, "patience": 1, "rho": 1.0}) for e in (1, 3)}
    steps = {e: int(load_checkpoint(str(tmp_path / str(e))).arrays["optim.t"]) for e in runs}
    lines = {e: [json.loads(s) for s in (tmp_path / str(e) / "metrics.jsonl").read_text()
                 .splitlines()] for e in runs}
    def batches(e):
        return sum(-(-m["visited"] // 32) for m in lines[e])
    assert steps[1] == batches(1) and steps[3] == 3 * batches(3)
    assert lines[1][0]["visited"] == lines[3][0]["visited"]
    assert runs[1]["weights_sha256"] != runs[3]["weights_sha256"]
    # epoch 1 streams every sample in both; echo 3 learns faster, so more settle by epoch 2
    assert lines[3][0]["bytes_down"] == lines[1][0]["bytes_down"]
    assert lines[3][1]["settled"] >= lines[1][1]["settled"]


def test_echo_is_bounded():
    for bad in (0, 17, 2.5):
        with pytest.raises(EdgekdError, match="echo"):
            TrainConfig(echo=bad).check()


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(teacher, digits, tmp_path):
    run(teacher, digits, tmp_path, epochs=1)
    with pytest.raises(EdgekdError, match="--resume"):
        run(teacher, digits, tmp_path, epochs=1)
    with pytest.raises(EdgekdError, match="nothing to resume"):
        run(teacher, digits, tmp_path / "empty", resume=True)


def stream(src, epoch):
    """The ids of an epoch's batches, acknowledging each as the trainer does."""
    for cursor, b in enumerate(src.epoch(epoch), 1):
        yield b.ids
        src.report(epoch, cursor, b.ids[:0], b.ids[:0])


def test_validation_ids_are_never_streamed(teacher, digits):
    src = LocalSource(teacher, digits)
    w = src.open(Hello(0, 32, 0.2, (64,), 10))
    val = set(src.validation().ids.tolist())
    assert len(val) == w.num_val == round(0.2 * len(digits.y_train))
    seen = np.concatenate(list(stream(src, 0)))
    assert len(seen) == w.num_train - w.num_val and not val & set(seen.tolist())


def test_halted_samples_are_not_sent_and_order_is_a_function_of_seed_epoch_halted(teacher, digits):
    def order(halted):
        src = LocalSource(teacher, digits)
        src.open(Hello(3, 50, 0.1, (64,), 10, np.array(halted, np.int64), len(digits.y_train)))
        return np.concatenate(list(stream(src, 2)))
    base = order([])
    halted = base[:100]
    again = order(halted)
    assert not set(halted.tolist()) & set(again.tolist())
    assert again.tolist() == [i for i in base.tolist() if i not in set(halted.tolist())]


def test_byte_budget_stops_the_run(teacher, digits, tmp_path):
    res = run(teacher, digits, tmp_path, halting={"byte_budget": 200_000})
    assert res["stop_reason"].startswith("byte-budget")
    assert res["epochs_run"] == 1


def test_input_shape_mismatch_is_one_line(teacher, digits, tmp_path):
    spec = dict(STUDENT, input_shape=[8, 8, 1])
    spec["layers"] = [{"type": "flatten"}] + STUDENT["layers"]
    cfg = TrainConfig(epochs=1)
    with pytest.raises(EdgekdError, match=r"input shape \[8, 8, 1\]"):
        train_student(spec, LocalSource(teacher, digits), cfg, str(tmp_path))


class NaNTeacher:
    num_classes = 10

    def logits(self, x):
        out = np.zeros((len(x), 10), np.float32)
        out[0, 3] = np.nan
        return out


def test_teacher_emitting_nan_stops_with_one_line_and_no_files(digits, tmp_path):
    with pytest.raises(EdgekdError, match="NaN"):
        train_student(STUDENT, LocalSource(NaNTeacher(), digits), TrainConfig(epochs=1),
                      str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_teacher_file_with_nan_weights_is_refused(tmp_path):
    from edgekd.nn.io import save_model
    from edgekd.nn.model import Sequential
    m = Sequential(STUDENT)
    m.layers[0].params["kernel"][0, 0] = np.inf
    save_model(tmp_path / "t.npz", m)
    with pytest.raises(EdgekdError, match="NaN or inf"):
        load_teacher(tmp_path / "t.npz")
