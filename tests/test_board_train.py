"""The whole float32 student trained on the board (TRAIN_SETUP / TRAIN_STEP / EVAL /
PARAMS_*, docs/protocol.md 11.8) on every kind of board: the emulator (edgekd's own layers and
optimizers), the C firmware on this host (built with the sanitizers), and the same firmware on
a Cortex-M4F and a Cortex-M3 (soft float) in QEMU.

- numerics: given the same spec, init, batch order and hyper-parameters, the board's weights
  after >= 100 steps equal the NumPy trainer's (edgekd.distill.steps.kd_step with edgekd's SGD
  and Adam) within float32 tolerance (TOL below);
- `edgekd board train` on digits reaches `edgekd train`'s test accuracy within one point
  (mean of three seeds) with halting, on the board, at under 25% of naive float32 streaming's
  bytes; `board weights` gives a model `eval` and `export` read;
- memory: the board's arena plan equals the planner's prediction; a student that does not
  fit is refused by the host before it is sent, naming the bytes, and by the board too;
- bad frames change nothing; instructions per training sample on the M4F are at most half
  of AIfES's (issue 11's figures), and within 25% of the designer's Cortex-M latency at an
  assumed 1.5 cycles per instruction.
Each board is started once per module."""

import json
import subprocess

import numpy as np
import pytest

from boardutil import (EDGEKD, QEMU_MACHINES, board_models, board_params, boards, cli,  # noqa: F401
                       digits_mlp, ok, one_line_error)

# Weights after the steps below: |board - numpy| <= ATOL + RTOL * |numpy| element-wise.
# float32 sums in another order (BLAS vs the firmware's loops, expf/logf of newlib vs NumPy)
# differ by a few ulp per step; after 102 steps the worst measured |board - numpy| over every
# board and both optimizers was 1.2e-6 (at most 26% of this bound).
RTOL, ATOL = 1e-4, 1e-6
SLICE = 136          # samples streamed (every byte crosses an emulated UART on QEMU): with
                     # batch 4, 34 steps an epoch, 102 in 3 epochs
SAN_ENV = {"ASAN_OPTIONS": "abort_on_error=1:detect_leaks=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1", "PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="module")
def running(boards):
    """get(kind): that board, started once for the module (host C with the sanitizers)."""
    started = {}

    def get(kind):
        if kind not in started:
            b = (boards.start(kind, sanitize=True, env=SAN_ENV) if kind == "host-c"
                 else boards.start(kind))
            b.__enter__()
            started[kind] = b
        return started[kind]
    yield get
    for kind, b in started.items():
        alive = b.proc.poll() is None
        log = b.stderr()
        b.close()
        assert alive, f"{kind} died: {log[-2000:]}"
        assert "runtime error" not in log and "AddressSanitizer" not in log, log[-2000:]


@pytest.fixture(scope="module")
def digits(board_models):
    from edgekd.teachers import load_teacher
    ds = board_models["ds"]
    return ds, load_teacher(str(board_models["teacher"]), ds).logits(ds.x_train)


def numpy_reference(spec, init, x, y, t, train_ids, cfg):
    """edgekd's trainer step by step: the same order (edgekd.order), schedule, optimizer and
    settling rule (SettleTracker, with the teacher's information under the relative threshold).
    Returns (weights, steps, settled mask)."""
    from edgekd.distill.halting import SettleTracker
    from edgekd.distill.losses import teacher_information
    from edgekd.distill.optim import make_optimizer
    from edgekd.distill.steps import kd_step
    from edgekd.kernels import backend
    from edgekd.order import epoch_order
    from edgekd.nn.model import Sequential
    backend.select("numpy")
    model = Sequential(spec)
    model.flat_params[...] = init
    opt = make_optimizer(cfg.optimizer, model.trainables(), cfg.lr, 0.0, cfg.momentum)
    steps = 0
    tracker = SettleTracker(len(y), cfg.halting)
    for epoch in range(cfg.epochs):
        opt.lr = np.float32(cfg.lr_at(epoch))
        order = epoch_order(train_ids, cfg.seed, epoch, tracker.settled)
        for i in range(0, len(order), cfg.batch):
            b = order[i:i + cfg.batch]
            res = kd_step(model, opt, x[b], t[b], y[b], cfg.temperature, cfg.alpha)
            tracker.observe(b, res.kl, res.agree, info=teacher_information(t[b], cfg.temperature))
            steps += 1
    return model.flat_params.copy(), steps, tracker.settled.copy()


@pytest.mark.parametrize("kind", board_params())
def test_numerics_match_the_numpy_trainer(kind, running, digits):
    from edgekd.distill.config import TrainConfig
    from edgekd.distill.halting import HaltingConfig
    from edgekd.nn.model import Sequential
    from firmware_bridge.board_train import BoardTrainer, encode_x
    from firmware_bridge.commands import connect, info
    from firmware_bridge.student import get_params
    ds, logits = digits
    n = SLICE
    x, y, t = ds.x_train[:n], ds.y_train[:n], logits[:n]
    spec = digits_mlp(12)   # small: the M3 computes in software floating point
    spec["layers"][0]["activation"] = "tanh" if kind == "qemu-m3" else "relu"
    init = Sequential(spec, seed=3).flat_params.copy()
    board = running(kind)
    # halting off, then on (the relative threshold, loose enough that samples settle within
    # the three epochs and leave the later epochs' orders): the same weights means the board
    # settled exactly the samples the NumPy trainer did
    for opt, lr, halting in (("sgd", 0.05, HaltingConfig(enabled=False)),
                             ("adam", 0.01, HaltingConfig(enabled=False)),
                             ("adam", 0.01, HaltingConfig(eps=0.5, threshold="relative",
                                                          patience=1, min_samples=0))):
        cfg = TrainConfig(epochs=3, batch=4, lr=lr, optimizer=opt, val_fraction=0.0,
                          restore_best=False, halting=halting)
        with connect(board.port, timeout=10) as client:
            res = BoardTrainer(client, spec, init, cfg).run(x, y, t, ds.x_test[:8], ds.y_test[:8])
            got = get_params(client, info(client))
        _, _, _, _, xd = encode_x(x, "u8")   # BoardTrainer's default x codec
        want, steps, settled = numpy_reference(spec, init, xd, y, t, np.arange(n), cfg)
        assert steps >= 100 if not halting.enabled else 60 <= steps < 100
        assert res["settled_fraction"] == settled.mean()
        assert (0.1 < settled.mean() < 0.9) if halting.enabled else not settled.any()
        err = np.abs(got - want)
        print(kind, opt, steps, "max |err|", float(err.max()), "max err/bound",
              float((err / (ATOL + RTOL * np.abs(want))).max()))
        assert np.all(err <= ATOL + RTOL * np.abs(want)), (opt, float(err.max()),
                                                          float((err / (ATOL + RTOL * np.abs(want))).max()))
        assert res["memory"]["board"]["arena"] == res["memory"]["predicted"]["arena"]
        for part in ("params", "grads", "optimizer", "activations", "settle", "frame_buffers"):
            assert res["memory"]["board"][part] == res["memory"]["predicted"][part], part
        if kind in QEMU_MACHINES:
            assert res["instructions_per_sample"] > 0
        else:
            assert res["instructions_per_sample"] is None


def edgekd_train(spec_path, teacher, seed, out):
    r = subprocess.run(EDGEKD + ["train", "--student", str(spec_path), "--teacher", str(teacher),
                                 "--data", "digits", "--seed", str(seed), "--out", str(out),
                                 "--json"], check=False, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", board_params("host-c", "emulator"))
def test_board_train_on_digits_matches_edgekd_train(kind, running, board_models, tmp_path):
    spec_path = tmp_path / "student.json"
    spec_path.write_text(json.dumps(digits_mlp(32)))
    teacher = board_models["teacher"]
    seeds = (0, 1, 2) if kind == "host-c" else (0,)
    port = running(kind).port
    runs = [ok(port, "train", "--student", str(spec_path), "--teacher", str(teacher), "--data",
               "digits", "--seed", str(s), timeout=300) for s in seeds]
    refs = [edgekd_train(spec_path, teacher, s, tmp_path / f"run{s}") for s in seeds]
    board_acc = np.mean([r["test_accuracy"] for r in runs])
    ref_acc = np.mean([r["test_accuracy"] for r in refs])
    print(kind, "board", [r["test_accuracy"] for r in runs], "edgekd train",
          [r["test_accuracy"] for r in refs],
          "link/naive", [round(r["link_fraction_of_naive"], 3) for r in runs])
    assert board_acc >= ref_acc - 0.01, (board_acc, ref_acc)
    for r in runs:
        assert r["bytes_down"] + r["bytes_up"] < 0.25 * r["bytes_naive_run"], r
        assert r["bytes_naive"] == r["bytes_naive_run"] <= r["bytes_naive_planned"]
        assert r["loss_after"] < 0.2 * r["loss_before"]
        assert 0 < r["settled_fraction"] <= 1 and 1 <= r["epochs_run"] <= 30
        assert r["memory"]["board"]["arena"] == r["memory"]["predicted"]["arena"]

    # the student comes back as an edgekd model that eval and export read
    w = ok(port, "weights", "-o", str(tmp_path / "board_student.npz"))
    assert w["kind"] == "student" and w["spec"] == json.loads(spec_path.read_text()) | {
        "layers": [dict(layer, activation=layer.get("activation", "none"))
                   for layer in digits_mlp(32)["layers"]]}
    ev = subprocess.run(EDGEKD + ["eval", str(tmp_path / "board_student.npz"), "--data", "digits",
                                  "--json"], check=False, capture_output=True, text=True,
                        timeout=120)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["test_accuracy"] == runs[-1]["test_accuracy"]
    ex = subprocess.run(EDGEKD + ["export", str(tmp_path / "board_student.npz"), "-o",
                                  str(tmp_path / "s.tflite"), "--json"], check=False,
                        capture_output=True, text=True, timeout=300)
    assert ex.returncode == 0, ex.stderr
    assert (tmp_path / "s.tflite").read_bytes()[4:8] == b"TFL3"



AIFES_SGD_B32, AIFES_ADAM_B32 = 60_729, 128_620   # issue 11: AIfES on the same QEMU, 64-32-10
# A board the size of AIfES's training run (issue 11: 66 KB of RAM for the digits MLP at
# batch 32): 64 KiB of RAM in all, a 2 KiB thread stack (digits training needs 1.5 KiB: 1 KiB
# overflows into the MPU guard and faults), int8 buffers for this student's widths and a
# 48 KiB training arena, which holds Adam at batch 32 with one settle byte per training sample.
SMALL_RAM, SMALL_STACK, AIFES_RAM_B32 = 64 * 1024, 2048, 66_000
SMALL_BUILD = {"EKB_MAX_WIDTH": 64, "EKB_MAX_HEAD": 320, "EKB_MAX_CLASSES": 10,
               "EKB_TRAIN_ARENA": 48 * 1024}


@pytest.mark.parametrize("kind", board_params("qemu-m4f"))
def test_a_64_kib_cortex_m4_trains_the_digits_mlp_by_kd_in_less_ram_than_aifes(
        kind, boards, board_models, tmp_path):
    """The whole digits run on the Cortex-M4F in QEMU, on a board with less RAM than AIfES
    uses for the same MLP: default `board train` (Adam, batch 32, halting) within a point of
    `edgekd train` with the same seed, at under 25% of naive bytes, and the instruction
    counts of the same small board at most half of AIfES's."""
    from firmware_bridge.build import image_sizes
    image = boards.firmware(kind, SMALL_BUILD, ram=SMALL_RAM, stack=SMALL_STACK)
    sizes = image_sizes(image)
    ram_used = sizes["data"] + sizes["bss"] + sizes["stack"]
    assert ram_used <= SMALL_RAM < AIFES_RAM_B32, sizes
    spec_path = tmp_path / "student.json"
    spec_path.write_text(json.dumps(digits_mlp(32)))
    teacher = board_models["teacher"]
    with boards.start(kind, defines=SMALL_BUILD, ram=SMALL_RAM, stack=SMALL_STACK) as b:
        assert ok(b.port, "info")["ram_bytes"] == SMALL_RAM
        run = ok(b.port, "train", "--student", str(spec_path), "--teacher", str(teacher),
                 "--data", "digits", "--seed", "0", timeout=600)
        bench = ok(b.port, "bench", "--data", "digits", "--train-student", str(spec_path),
                   timeout=300)
    ref = edgekd_train(spec_path, teacher, 0, tmp_path / "ref")
    print("64 KiB M4F", ram_used, "B:", run["test_accuracy"], "edgekd train",
          ref["test_accuracy"], "link/naive", round(run["link_fraction_of_naive"], 3))
    assert run["test_accuracy"] >= ref["test_accuracy"] - 0.01
    assert run["bytes_down"] + run["bytes_up"] < 0.25 * run["bytes_naive_run"]
    assert run["optimizer"] == "adam" and run["batch"] == 32
    assert run["memory"]["board"]["arena"] == run["memory"]["predicted"]["arena"]
    assert run["memory"]["board"]["capacity"] == SMALL_BUILD["EKB_TRAIN_ARENA"]
    cost = {(t["optimizer"], t["batch"]): t["instructions_per_sample"] for t in bench["training"]}
    assert cost["sgd", 32] <= AIFES_SGD_B32 / 2 and cost["adam", 32] <= AIFES_ADAM_B32 / 2


def setup_of(spec, optimizer="adam", rows=8, samples=100, x_dtype=0):
    from edgekd.distill.config import TrainConfig
    from firmware_bridge.student import setup_for
    return setup_for(spec, TrainConfig(optimizer=optimizer), rows, samples, x_dtype)


@pytest.mark.parametrize("kind", board_params("host-c", "emulator"))
def test_a_student_that_does_not_fit_is_refused_by_host_and_board(kind, running, board_models,
                                                                  tmp_path):
    from firmware_bridge import messages as m
    from firmware_bridge.commands import connect
    from firmware_bridge.protocol import BoardError
    big = digits_mlp(1024, 1024)
    spec_path = tmp_path / "big.json"
    spec_path.write_text(json.dumps(big))
    port = running(kind).port
    r = cli(port, "train", "--student", str(spec_path), "--teacher",
            str(board_models["teacher"]), "--data", "digits", "--limit", "50")
    line = one_line_error(r, "needs", "bytes of arena", "the board has")
    with connect(port) as client:
        assert client.link.sent > 0
        before = client.link.sent
        # the host sent no TRAIN_SETUP for it: the board still has no student (or the last)
        plan, setup = m.unpack_setup_reply(client.request(m.TRAIN_SETUP))
        assert setup is None or setup.layers != [(1024, 1), (1024, 1), (10, 0)]
        assert client.link.sent > before
        with pytest.raises(BoardError) as e:   # the board refuses it too
            client.request(m.TRAIN_SETUP, setup_of(big).pack())
        assert e.value.code == m.E_NO_FIT
    needed = int(line.split("needs ")[1].split(" bytes")[0].replace(",", ""))
    assert needed > plan["capacity"]


def test_planner_matches_what_the_boards_allocate(running):
    """Predicted arena bytes equal the board's own for several students (the firmware lays
    its arena out itself); within 10% is the issue's bar, equality is what holds."""
    from edgekd.design.board_memory import train_plan
    from firmware_bridge import messages as m
    from firmware_bridge.commands import connect, info
    cases = [(digits_mlp(32), "sgd", 18, 1437), (digits_mlp(32), "adam", 18, 1437),
             (digits_mlp(48, 16), "adam", 8, 300), (digits_mlp(16), "sgd", 1, 7)]
    for kind in ("host-c", "emulator"):
        with connect(running(kind).port) as client:
            board = info(client)
            for spec, opt, rows, samples in cases:
                plan, _ = m.unpack_setup_reply(client.request(
                    m.TRAIN_SETUP, setup_of(spec, opt, rows, samples).pack()))
                want = train_plan(64, [layer["units"] for layer in spec["layers"]], opt, rows,
                                  samples, board.max_payload)
                assert plan["arena"] == want.arena and plan["frame_buffers"] == want.frame_buffers
                assert abs(plan["arena"] - want.arena) <= 0.1 * plan["arena"]


def test_the_designer_predicts_what_the_board_allocates(running):
    """`edgekd design` for a board profile: its board_train figure is the C firmware's plan
    for the designed student; with ram_for board-train it is the bound the design meets,
    settle bytes of the training samples included."""
    from edgekd.design.designer import Constraints, design
    from edgekd.design.profiles import get_profile
    from firmware_bridge import messages as m
    from firmware_bridge.commands import connect
    for opt, ram_for, samples in (("sgd", None, 0), ("adam", None, 0),
                                  ("adam", "board-train", 300)):
        d = design(digits_mlp(256, 256) if ram_for else digits_mlp(48), Constraints.from_profile(
            get_profile("nrf52840"), optimizer=opt, ram_for=ram_for, train_samples=samples,
            ram_bytes=40_000 if ram_for else None))
        pred = d.board_train
        with connect(running("host-c").port) as client:
            plan, _ = m.unpack_setup_reply(client.request(
                m.TRAIN_SETUP, setup_of(d.spec, opt, pred["rows"], samples).pack()))
        assert plan["arena"] == pred["arena"] and plan["frame_buffers"] == pred["frame_buffers"]
        if ram_for:
            assert d.binding == "ram" and 0.8 * 40_000 < plan["arena"] <= 40_000


@pytest.mark.parametrize("kind", board_params("host-c", "emulator", "qemu-m4f"))
def test_bad_training_frames_change_nothing(kind, running, digits):
    """Each gets an error reply, the weights stay, the board keeps answering (host C under
    the sanitizers)."""
    from firmware_bridge import messages as m
    from firmware_bridge.commands import connect, info
    from firmware_bridge.protocol import BoardError
    from firmware_bridge.student import get_params, set_params
    ds, logits = digits
    spec = digits_mlp(16)
    with connect(running(kind).port, timeout=5) as client:
        board = info(client)
        s = setup_of(spec, "sgd", rows=4, samples=10)
        for what, patch in (("zero rows", {"rows": 0}), ("nan temperature", {"temperature": float("nan")}),
                            ("alpha 2", {"alpha": 2.0}), ("patience 0", {"patience": 0}),
                            ("x dtype 9", {"x_dtype": 9}), ("optimizer 7", {"optimizer": 7}),
                            ("activation 9", {"layers": [(16, 9), (10, 0)]}),
                            ("zero units", {"layers": [(0, 1), (10, 0)]}),
                            ("one class", {"layers": [(16, 1), (1, 0)]}),
                            ("10^9 samples", {"samples": 10 ** 9})):
            bad = m.StudentSetup(**{**s.__dict__, **patch})
            with pytest.raises(BoardError):
                client.request(m.TRAIN_SETUP, bad.pack())
        for body in (b"", b"\x00", b"\x00" * 47, s.pack()[:-1], s.pack() + b"\x00"):
            with pytest.raises(BoardError):
                client.request(m.TRAIN_STEP, body)
        client.request(m.TRAIN_SETUP, s.pack())
        w0 = np.linspace(-0.5, 0.5, 64 * 16 + 16 + 16 * 10 + 10, dtype=np.float32)
        set_params(client, board, w0)
        x = ds.x_train[:4].astype(np.float32)
        t = logits[:4].astype(np.float32)
        y = ds.y_train[:4]

        def frame(**kw):
            f = dict(flags=m.STEP_BEGIN | m.STEP_END, dtype=m.X_F32, batch=4, lr=0.1,
                     ids=np.arange(4), labels=y, x=x, teacher=t)
            f.update(kw)
            return m.pack_step(m.StepFrame(**f))
        nan_x = x.copy()
        nan_x[1, 3] = np.nan
        inf_t = t.copy()
        inf_t[2, 0] = np.inf
        bad_frames = [frame(x=nan_x), frame(teacher=inf_t), frame(lr=float("nan")),
                      frame(lr=1e30), frame(ids=np.array([0, 1, 2, 10])),
                      frame(labels=np.array([0, 1, 2, 10])), frame(batch=3),
                      frame(dtype=m.X_U8), frame(flags=8), frame()[:-4], frame() + b"\0\0\0\0",
                      m.PARAMS_REQ.pack(0, 10)]
        for body in bad_frames:
            with pytest.raises(BoardError):
                client.request(m.TRAIN_STEP, body)
            np.testing.assert_array_equal(get_params(client, board), w0)
        # a step whose update overflows a weight: refused, the weights unchanged
        huge = np.full_like(w0, 3e38)
        set_params(client, board, huge)
        with pytest.raises(BoardError) as e:
            client.request(m.TRAIN_STEP, frame(lr=1e5))
        assert "unchanged" in str(e.value)
        np.testing.assert_array_equal(get_params(client, board), huge)
        for rtype, body in ((m.PARAMS_SET, m.U32.pack(0) + np.float32([np.nan]).tobytes()),
                            (m.PARAMS_SET, m.U32.pack(2) + b"\0" * 4),
                            (m.PARAMS_SET, m.U32.pack(4 * len(w0)) + b"\0" * 4),
                            (m.PARAMS_GET, m.PARAMS_REQ.pack(4 * len(w0) + 1, 4)),
                            (m.EVAL, m.EVAL_HEAD.pack(m.X_F32, 0)),
                            (m.EVAL, m.EVAL_HEAD.pack(m.X_F32, 5) + x.tobytes() + x[:1].tobytes()),
                            (m.EVAL, m.EVAL_HEAD.pack(m.X_F32, 4) + nan_x.tobytes())):
            with pytest.raises(BoardError):
                client.request(rtype, body)
        np.testing.assert_array_equal(get_params(client, board), huge)
        # and it still trains
        set_params(client, board, w0)
        r = m.unpack_step_reply(client.request(m.TRAIN_STEP, frame()))
        assert r.n == 4 and np.isfinite(r.loss_sum)
        assert not np.array_equal(get_params(client, board), w0)


def test_training_message_layouts_match_the_doc():
    """docs/protocol.md 11.8, re-derived with struct."""
    import struct

    from firmware_bridge import messages as m
    assert [m.TRAIN_SETUP, m.TRAIN_STEP, m.EVAL, m.PARAMS_GET, m.PARAMS_SET] == \
        list(range(0x2A, 0x2F))
    s = m.StudentSetup(1, m.X_U8, True, 64, 18, 1000, 4.0, 0.9, 0.9, 0.999, 1e-8, 0.05, 2, 1,
                       0.5, 0.25, [(32, 1), (10, 0)])
    assert s.pack() == (struct.pack("<BBBBHHIffffffBB2xff", 1, 2, 2, 1, 64, 18, 1000, 4.0, 0.9,
                                    0.9, 0.999, 1e-8, 0.05, 2, 1, 0.5, 0.25)
                        + struct.pack("<HBxHBx", 32, 1, 10, 0))
    assert m.StudentSetup.unpack(s.pack()).pack() == s.pack()
    f = m.StepFrame(3, m.X_U8, 5, 0.5, np.array([7]), np.array([2]), np.array([[9, 8]], np.uint8),
                    np.array([[1.0, 2.0]], np.float32))
    assert m.pack_step(f) == (struct.pack("<BBHHHfI", 3, 2, 1, 5, 0, 0.5, 0)
                              + struct.pack("<IH", 7, 2) + bytes([9, 8]) + struct.pack("<2f", 1, 2))
    r = m.StepResult(1.5, 0.25, 1, 1, 0, 12345, True, np.array([7]))
    assert m.pack_step_reply(r) == struct.pack("<ffHHHHQB3xI", 1.5, 0.25, 1, 1, 0, 1, 12345, 1, 7)
    assert m.PLAN_S.size == 32 and m.EVAL_HEAD.size == 4 and m.PARAMS_REPLY.size == 8



@pytest.mark.parametrize("kind", board_params("qemu-m4f"))
def test_instructions_per_training_sample_at_most_half_of_aifes(kind, running, tmp_path):
    """`board bench --train-student` on the M4F: the digits MLP 64-32-10 with the KD loss at
    T = 4, SGD and Adam at batch 32, counted by SysTick under -icount (deterministic)."""
    spec_path = tmp_path / "mlp.json"
    spec_path.write_text(json.dumps(digits_mlp(32)))
    r = ok(running(kind).port, "bench", "--data", "digits", "--train-student", str(spec_path),
           timeout=300)
    assert r["counted"]
    cost = {(t["optimizer"], t["batch"]): t["instructions_per_sample"] for t in r["training"]}
    print(cost)
    assert set(cost) == {("sgd", 1), ("sgd", 32), ("adam", 1), ("adam", 32)}
    assert cost["sgd", 32] <= AIFES_SGD_B32 / 2
    assert cost["adam", 32] <= AIFES_ADAM_B32 / 2
    assert cost["sgd", 1] > cost["sgd", 32] and cost["adam", 1] > cost["adam", 32]

    # The designer's latency for a Cortex-M4F profile (nrf52840: 0.3 FLOP per cycle, the
    # cost model's 3x inference FLOPs per training sample) against these counts, at an
    # ASSUMED 1.5 cycles per instruction: QEMU counts instructions, not cycles; on a
    # Cortex-M4F VLDR/VSTR take 2 cycles, VMLA/VFMA 3, a taken branch 2-4, integer ops 1.
    from edgekd.design.cost import model_cost
    from edgekd.design.profiles import get_profile
    cpi = 1.5
    p = get_profile("nrf52840")
    for opt in ("sgd", "adam"):
        mc = model_cost(digits_mlp(32), batch=32, optimizer=opt)
        predicted_s = mc.train_flops_per_sample / p.flops_per_s
        counted_s = cost[opt, 32] * cpi / p.clock_hz
        assert abs(predicted_s - counted_s) <= 0.25 * counted_s, (opt, predicted_s, counted_s)
