"""edgekd.design: units, profiles, cost model, designer, speed measurement."""

import dataclasses
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgekd.design.cost import OPTIMIZER_SLOTS, latency_s, model_cost
from edgekd.design.designer import (
    MULTIPLIERS,
    Constraints,
    candidates,
    design,
    family_of,
    round_width,
    template_spec,
)
from edgekd.design.measure import measure_flops
from edgekd.design.profiles import PROFILES, get_profile
from edgekd.design.units import (
    format_bytes,
    format_flops,
    format_seconds,
    parse_bytes,
    parse_flops,
    parse_seconds,
)
from edgekd.errors import EdgekdError
from edgekd.nn.layers import Layer
from edgekd.nn.model import Sequential
from edgekd.nn.spec import build_layers


def one_line(e):
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def mlp(*widths, n_in=64, classes=10, **extra):
    layers = [{"type": "dense", "units": w, "activation": "relu", **extra} for w in widths]
    return {"input_shape": [n_in], "num_classes": classes,
            "layers": layers + [{"type": "dense", "units": classes}]}


TEACHER = mlp(256, 256)

CONV1D_TEACHER = {"input_shape": [64, 3], "num_classes": 6, "layers": [
    {"type": "conv1d", "filters": 32, "kernel_size": 5, "padding": "same", "activation": "relu"},
    {"type": "maxpool1d", "pool_size": 2},
    {"type": "conv1d", "filters": 64, "kernel_size": 5, "padding": "same", "activation": "relu"},
    {"type": "batchnorm"},
    {"type": "maxpool1d", "pool_size": 2},
    {"type": "conv1d", "filters": 64, "kernel_size": 3, "activation": "relu"},
    {"type": "global_avgpool"},
    {"type": "dense", "units": 64, "activation": "relu"},
    {"type": "dropout", "rate": 0.3},
    {"type": "dense", "units": 6}]}

CONV2D_TEACHER = {"input_shape": [16, 16, 1], "num_classes": 4, "layers": [
    {"type": "conv2d", "filters": 16, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "maxpool2d", "pool_size": 2},
    {"type": "conv2d", "filters": 32, "kernel_size": [3, 3], "stride": 1, "activation": "relu6"},
    {"type": "maxpool2d", "pool_size": [2, 2], "stride": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 32, "activation": "relu"},
    {"type": "dense", "units": 4}]}


# -- units ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("8KiB", 8192), ("8 KiB", 8192), ("8kB", 8000), ("8KB", 8000), ("1.5MiB", 1572864),
    ("2MB", 2_000_000), ("1GiB", 1024 ** 3), ("1GB", 10 ** 9), ("512", 512), ("512B", 512),
    ("0", 0), (4096, 4096), ("1e3", 1000), ("  64 KiB ", 65536)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["8KIB", "8kb", "8 bytes", "KiB", "", "-1KiB", "8 TiB",
                                  "nan", "1..2MB", True])
def test_parse_bytes_bad(text):
    with pytest.raises(EdgekdError) as e:
        parse_bytes(text)
    msg = one_line(e)
    assert repr(text) in msg
    if text not in ("-1KiB", "nan"):
        assert "KiB" in msg and "kB" in msg


@pytest.mark.parametrize("text, expected", [
    ("50MFLOPS", 5e7), ("50 mflops", 5e7), ("2GFLOP/s", 2e9), ("2 gflop/s", 2e9),
    ("3kFLOPS", 3e3), ("7FLOPS", 7.0), ("1e8", 1e8), (2.5e9, 2.5e9), ("1.5 GFLOP/s", 1.5e9)])
def test_parse_flops(text, expected):
    assert parse_flops(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["50MHz", "fast", "0", "-1GFLOPS", "5 MFLOP", "GFLOPS"])
def test_parse_flops_bad(text):
    with pytest.raises(EdgekdError) as e:
        parse_flops(text)
    msg = one_line(e)
    assert repr(text) in msg


@pytest.mark.parametrize("text, expected", [
    ("1ms", 1e-3), ("1 s", 1.0), ("250us", 2.5e-4), ("250µs", 2.5e-4), ("250\u03bcs", 2.5e-4),
    ("100ns", 1e-7), ("0.1", 0.1), (2, 2.0)])
def test_parse_seconds(text, expected):
    assert parse_seconds(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["1MS", "1 min", "0ms", "-2s", "ms", "1h"])
def test_parse_seconds_bad(text):
    with pytest.raises(EdgekdError) as e:
        parse_seconds(text)
    msg = one_line(e)
    assert repr(text) in msg


def test_formatting():
    assert format_bytes(512) == "512 B"
    assert format_bytes(8192) == "8.00 KiB"
    assert format_bytes(1536 * 1024) == "1.50 MiB"
    assert format_bytes(4 * 1024 ** 3) == "4.00 GiB"
    assert format_bytes(None) == "unbounded"
    assert format_flops(262_144) == "262 kFLOP"
    assert format_flops(5e7, per_second=True) == "50.0 MFLOP/s"
    assert format_flops(12) == "12 FLOP"
    assert format_seconds(2) == "2.00 s"
    assert format_seconds(1.5e-3) == "1.50 ms"
    assert format_seconds(2.3e-4) == "230 us"
    assert format_seconds(1.2e-8) == "12.0 ns"
    for n in (1, 1000, 8192, 123456789):
        assert parse_bytes(format_bytes(n).replace(" ", "")) == pytest.approx(n, rel=0.01)


# -- profiles ---------------------------------------------------------------------------------

def test_profiles_sane():
    names = {"pi-zero", "pi-zero-2", "pi-4", "jetson-nano", "esp32-s3", "stm32f746", "nrf52840"}
    assert names <= set(PROFILES)
    for name, p in PROFILES.items():
        assert p.name == name and p.description
        assert p.kind in ("linux", "mcu")
        assert p.ram_bytes > 0 and p.clock_hz > 0 and p.cores >= 1
        assert p.flops_per_s > 0 and "estimate" in p.flops_note
        assert p.max_latency_s > 0
        if p.kind == "mcu":
            assert p.flash_bytes > p.ram_bytes / 4
            assert p.ram_bytes < 1024 ** 2
        else:
            assert p.flash_bytes is None and p.ram_bytes >= 512 * 1024 ** 2
        # an estimate of sustained single-core FLOP/s never exceeds a few FLOP per cycle
        assert p.flops_per_s <= 8 * p.clock_hz


def test_profile_datasheet_figures():
    KiB, MiB, GiB = 1024, 1024 ** 2, 1024 ** 3
    assert get_profile("pi-zero").ram_bytes == 512 * MiB
    assert get_profile("pi-zero").clock_hz == 1e9 and get_profile("pi-zero").cores == 1
    assert get_profile("pi-zero-2").cores == 4
    assert get_profile("pi-4").ram_bytes == 4 * GiB
    assert get_profile("jetson-nano").clock_hz == 1.43e9
    assert (get_profile("esp32-s3").ram_bytes, get_profile("esp32-s3").flash_bytes) == (512 * KiB, 8 * MiB)
    assert (get_profile("stm32f746").ram_bytes, get_profile("stm32f746").flash_bytes) == (320 * KiB, MiB)
    assert (get_profile("nrf52840").ram_bytes, get_profile("nrf52840").clock_hz) == (256 * KiB, 64e6)
    assert get_profile("PI_ZERO_2").name == "pi-zero-2"


def test_unknown_profile():
    with pytest.raises(EdgekdError) as e:
        get_profile("arduino-uno")
    msg = one_line(e)
    assert "arduino-uno" in msg and "pi-zero" in msg and "nrf52840" in msg


# -- cost model -------------------------------------------------------------------------------

SPECS = [
    mlp(32),
    mlp(256, 256),
    mlp(5, 3, 7, n_in=9, classes=2),
    {"input_shape": [8, 8], "num_classes": 3, "layers": [
        {"type": "flatten"}, {"type": "dropout", "rate": 0.1},
        {"type": "dense", "units": 16, "activation": "tanh"}, {"type": "batchnorm"},
        {"type": "dense", "units": 3}]},
    CONV1D_TEACHER,
    CONV2D_TEACHER,
    {"input_shape": [50, 2], "num_classes": 5, "layers": [
        {"type": "conv1d", "filters": 8, "kernel_size": 7, "stride": 3, "padding": "same"},
        {"type": "avgpool1d", "pool_size": 3, "stride": 2},
        {"type": "conv1d", "filters": 4, "kernel_size": 2, "stride": 2, "activation": "relu"},
        {"type": "flatten"}, {"type": "dense", "units": 5}]},
    {"input_shape": [13, 11, 2], "num_classes": 3, "layers": [
        {"type": "conv2d", "filters": 6, "kernel_size": [3, 2], "stride": [2, 1],
         "padding": "same", "activation": "relu6"},
        {"type": "maxpool2d", "pool_size": [2, 3], "stride": [1, 2]},
        {"type": "batchnorm"},
        {"type": "conv2d", "filters": 5, "kernel_size": 3},
        {"type": "global_avgpool"}, {"type": "dense", "units": 3}]},
]


@pytest.mark.parametrize("spec", SPECS)
def test_params_and_shapes_match_the_model(spec):
    model = Sequential(spec, seed=0)
    c = model_cost(spec)
    assert c.params == model.num_params()
    assert [lc.out_shape for lc in c.layers] == [layer.out_shape for layer in model.layers]
    assert [lc.in_shape for lc in c.layers] == [layer.in_shape for layer in model.layers]
    n_state = sum(v.size for v in model.state().values())
    assert c.storage_bytes == 4 * n_state
    assert c.params + c.buffers == n_state


@settings(max_examples=40, deadline=None)
@given(n_in=st.integers(1, 40), widths=st.lists(st.integers(1, 40), max_size=4),
       classes=st.integers(2, 12))
def test_params_match_random_mlps(n_in, widths, classes):
    spec = mlp(*widths, n_in=n_in, classes=classes)
    assert model_cost(spec).params == Sequential(spec).num_params()


@settings(max_examples=40, deadline=None)
@given(length=st.integers(8, 40), cin=st.integers(1, 4), filters=st.integers(1, 9),
       k=st.integers(1, 5), stride=st.integers(1, 3), padding=st.sampled_from(["valid", "same"]),
       pool=st.integers(1, 3), classes=st.integers(2, 5))
def test_params_match_random_conv1d(length, cin, filters, k, stride, padding, pool, classes):
    spec = {"input_shape": [length, cin], "num_classes": classes, "layers": [
        {"type": "conv1d", "filters": filters, "kernel_size": k, "stride": stride,
         "padding": padding, "activation": "relu"},
        {"type": "maxpool1d", "pool_size": pool},
        {"type": "flatten"}, {"type": "dense", "units": classes}]}
    try:
        model = Sequential(spec)
    except EdgekdError:
        assume(False)   # the pool does not fit the conv's output
    c = model_cost(spec)
    assert c.params == model.num_params()
    assert [lc.out_shape for lc in c.layers] == [layer.out_shape for layer in model.layers]


def test_dense_flops_by_hand():
    spec = {"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "dense", "units": 32, "activation": "relu"}, {"type": "dense", "units": 10}]}
    d1, d2 = model_cost(spec).layers
    assert d1.flops == 2 * 64 * 32 + 32 + 32      # MACs, bias, relu
    assert d2.flops == 2 * 32 * 10 + 10           # MACs, bias, no activation
    assert d1.params == 64 * 32 + 32 and d2.params == 32 * 10 + 10
    assert d1.int8_bytes == 64 * 32 + 4 * 32


def test_conv_pool_bn_flops_by_hand():
    spec = {"input_shape": [20, 3], "num_classes": 4, "layers": [
        {"type": "conv1d", "filters": 8, "kernel_size": 5, "activation": "relu"},   # -> [16, 8]
        {"type": "batchnorm"},
        {"type": "maxpool1d", "pool_size": 2},                                      # -> [8, 8]
        {"type": "global_avgpool"},                                                 # -> [8]
        {"type": "dense", "units": 4}]}
    conv, bn, pool, gap, dense = model_cost(spec).layers
    assert conv.out_shape == (16, 8)
    assert conv.flops == 2 * 5 * 3 * 8 * 16 + 16 * 8 + 16 * 8
    assert conv.kept_elems == 20 * 3 + 16 * 8 + 5 * 3 * 16        # in, out, im2col columns
    assert bn.flops == 2 * 16 * 8 and bn.params == 16 and bn.buffers == 16
    assert pool.flops == 8 * 8 * 2
    assert gap.flops == 8 * 8
    assert dense.flops == 2 * 8 * 4 + 4


def test_memory_by_hand():
    spec = mlp(32)
    p = 64 * 32 + 32 + 32 * 10 + 10
    acts = (64 + 32) + (32 + 10)
    for opt, slots in OPTIMIZER_SLOTS.items():
        c = model_cost(spec, batch=8, optimizer=opt)
        assert c.storage_bytes == 4 * p
        assert c.int8_storage_bytes == 64 * 32 + 4 * 32 + 32 * 10 + 4 * 10
        assert c.train_ram_bytes == 4 * p + 4 * p + 4 * p * slots + 4 * 8 * acts
        assert c.infer_ram_bytes == 4 * (64 + 32)
        assert c.train_flops_per_sample == 3 * c.flops
    assert (model_cost(spec, optimizer="adam").train_ram_bytes
            - model_cost(spec, optimizer="sgd").train_ram_bytes) == 4 * p


def test_cost_errors():
    with pytest.raises(EdgekdError) as e:
        model_cost(mlp(4), optimizer="rmsprop")
    assert "adam" in one_line(e)
    with pytest.raises(EdgekdError) as e:
        model_cost(mlp(4), batch=0)
    one_line(e)
    with pytest.raises(EdgekdError) as e:
        model_cost({"input_shape": [4], "num_classes": 3, "layers": [{"type": "dense", "units": 2}]})
    one_line(e)
    assert latency_s(1e6, 1e8) == pytest.approx(0.01)
    assert latency_s(1e6, None) is None


def test_cost_allocates_nothing(monkeypatch):
    monkeypatch.setattr(Layer, "allocate", lambda layer: pytest.fail("allocated weights"))
    big = mlp(4096, 4096, n_in=4096)
    assert model_cost(big).params == 2 * 4096 * 4097 + 4096 * 10 + 10


# -- designer ---------------------------------------------------------------------------------

def fits(cost, c):
    return cost.storage_bytes <= c.storage_bytes


def test_8kib_budget_gives_the_largest_fitting_student_on_the_grid():
    c = Constraints(storage_bytes=parse_bytes("8KiB"))
    d = design(TEACHER, c)
    assert d.family == "mlp"
    assert d.storage_bytes <= 8192
    assert d.params == Sequential(d.spec).num_params()
    assert d.binding == "storage" and 0.8 < d.usage["storage"] <= 1
    grid = [model_cost(cand.spec) for cand in candidates(TEACHER)]
    assert max(g.params for g in grid if fits(g, c)) == d.params
    last = d.spec["layers"][-1]
    assert last == {"type": "dense", "units": 10}
    build_layers(d.spec)
    assert d.spec["input_shape"] == [64] and d.spec["num_classes"] == 10


def test_grid_shape():
    cands = candidates(TEACHER)
    assert cands[0].spec == TEACHER and cands[0].multiplier == 1
    assert len({str(c.spec) for c in cands}) == len(cands)
    assert MULTIPLIERS[0] == 1 and MULTIPLIERS[-1] == pytest.approx(1 / 64)
    for cand in cands:
        assert 1 <= cand.dense_blocks <= 2
        for w in cand.widths:
            assert 2 <= w <= 256
            assert w < 8 or (w % 4 == 0) and (w < 32 or w % 8 == 0)
    assert round_width(100, 100) == 100 and round_width(99, 100) == 96 and round_width(1.2, 16) == 2 and round_width(9, 9) == 8
    assert round_width(0.3, 1) == 1


def test_tiny_budget_raises_one_line():
    with pytest.raises(EdgekdError) as e:
        design(TEACHER, {"storage_bytes": 100})
    msg = one_line(e)
    assert msg.startswith("nothing fits") and "storage" in msg and "100 B" in msg
    assert "x over" in msg


def test_tiny_ram_raises_naming_ram():
    with pytest.raises(EdgekdError) as e:
        design(TEACHER, Constraints(storage_bytes=10 ** 6, ram_bytes=2000))
    msg = one_line(e)
    assert "training RAM" in msg and "batch 32" in msg


def test_binding_none_when_the_teacher_fits():
    d = design(TEACHER, Constraints(storage_bytes=10 ** 7, ram_bytes=10 ** 9, flops_per_s=1e9,
                                    max_latency_s=1.0))
    assert d.binding == "none" and d.spec == TEACHER and d.params == d.teacher_params
    assert all(0 < r < 1 for r in d.usage.values())
    assert design(TEACHER, None).binding == "none"


def test_binding_storage_ram_latency():
    d = design(TEACHER, Constraints(storage_bytes=20_000, ram_bytes=10 ** 9))
    assert d.binding == "storage" and d.usage["storage"] > d.usage["ram"]
    d = design(TEACHER, Constraints(storage_bytes=10 ** 7, ram_bytes=200_000))
    assert d.binding == "ram" and d.train_ram_bytes <= 200_000
    assert d.usage["ram"] > d.usage["storage"]
    # a slow device: the latency limit binds although storage and RAM are plentiful
    d = design(TEACHER, Constraints(storage_bytes=10 ** 7, ram_bytes=10 ** 9, flops_per_s=1e6,
                                    max_latency_s=0.01))
    assert d.binding == "latency"
    assert d.latency_s <= 0.01 and d.flops <= 10_000
    assert d.params < d.teacher_params
    fast = design(TEACHER, Constraints(flops_per_s=1e9, max_latency_s=0.01))
    assert fast.binding == "none"


def test_nothing_fits_all_limits_at_once():
    # dropping this teacher's strided conv saves activations but grows the flatten head, so
    # a storage limit and a RAM limit can each be met while no student meets both
    teacher = SPECS[6]
    costs = [model_cost(cand.spec) for cand in candidates(teacher)]
    pair = next((a.storage_bytes, b.train_ram_bytes) for a in costs for b in costs
                if not any(c.storage_bytes <= a.storage_bytes
                           and c.train_ram_bytes <= b.train_ram_bytes for c in costs))
    with pytest.raises(EdgekdError) as e:
        design(teacher, Constraints(storage_bytes=pair[0], ram_bytes=pair[1]))
    msg = one_line(e)
    assert msg.startswith("nothing fits all limits at once") and "% over" in msg


def test_latency_needs_speed_and_nothing_fits_on_latency():
    with pytest.raises(EdgekdError) as e:
        design(TEACHER, {"max_latency_s": 0.01})
    assert "speed" in one_line(e)
    with pytest.raises(EdgekdError) as e:
        design(TEACHER, {"flops_per_s": 1e3, "max_latency_s": 1e-3})
    msg = one_line(e)
    assert "per inference" in msg and "limit" in msg


def test_bad_constraints():
    with pytest.raises(EdgekdError) as e:
        design(TEACHER, {"storage": 5})
    assert "storage" in one_line(e)
    with pytest.raises(EdgekdError):
        design(TEACHER, {"storage_bytes": -1})
    with pytest.raises(EdgekdError):
        design(TEACHER, {"optimizer": "lbfgs"})


def test_int8_storage_allows_a_bigger_student():
    f32 = design(TEACHER, Constraints(storage_bytes=8192))
    i8 = design(TEACHER, Constraints(storage_bytes=8192, storage_format="int8"))
    assert i8.params > f32.params and i8.int8_storage_bytes <= 8192


def test_conv1d_teacher_designs_a_conv1d_student():
    assert family_of(CONV1D_TEACHER) == "conv1d"
    d = design(CONV1D_TEACHER, Constraints(storage_bytes=parse_bytes("8KiB"), batch=16))
    assert d.family == "conv1d"
    types = [layer["type"] for layer in d.spec["layers"]]
    assert "conv1d" in types and types[-1] == "dense"
    assert d.spec["input_shape"] == [64, 3] and d.spec["num_classes"] == 6
    assert d.spec["layers"][-1] == {"type": "dense", "units": 6}
    assert d.storage_bytes <= 8192 and d.conv_blocks >= 1
    model = Sequential(d.spec)
    assert d.params == model.num_params()
    # never larger than the teacher, layer by layer
    teacher_conv = [e["filters"] for e in CONV1D_TEACHER["layers"] if e["type"] == "conv1d"]
    student_conv = [e["filters"] for e in d.spec["layers"] if e["type"] == "conv1d"]
    assert all(s <= t for s, t in zip(student_conv, teacher_conv))


def test_conv2d_teacher_and_ram_binding():
    d = design(CONV2D_TEACHER, Constraints(ram_bytes=parse_bytes("2MiB")))
    assert d.family == "conv2d" and d.binding == "ram" and d.train_ram_bytes <= 2 * 1024 ** 2
    assert any(e["type"] == "conv2d" for e in d.spec["layers"])
    Sequential(d.spec)


def test_every_candidate_is_valid_and_no_larger_than_the_teacher():
    for teacher in (TEACHER, CONV1D_TEACHER, CONV2D_TEACHER, SPECS[3], SPECS[6], SPECS[7]):
        t = model_cost(teacher)
        for cand in candidates(teacher):
            c = model_cost(cand.spec)          # validates with plan_layers
            assert c.params <= t.params
            assert cand.spec["layers"][-1] == {"type": "dense", "units": teacher["num_classes"]}


def test_design_is_fast_for_a_wide_teacher():
    wide = mlp(256, 256, 256, 256, n_in=784)
    start = time.perf_counter()
    design(wide, Constraints(storage_bytes=parse_bytes("64KiB"), ram_bytes=parse_bytes("1MiB"),
                             flops_per_s=1e8, max_latency_s=0.01))
    design(CONV1D_TEACHER, Constraints.from_profile(get_profile("esp32-s3"), ram_for="infer"))
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("family, shape", [("mlp", [64]), ("mlp", [8, 8]), ("conv1d", [128, 3]),
                                           ("conv2d", [28, 28, 1]), ("conv1d", [3, 2])])
def test_templates_design_on_profiles(family, shape):
    spec = template_spec(family, shape, 5)
    assert family_of(spec) == family
    for name in ("pi-zero", "pi-4"):
        d = design(spec, Constraints.from_profile(get_profile(name)))
        assert d.family == family
    d = design(spec, Constraints.from_profile(get_profile("nrf52840"), ram_for="infer",
                                              storage_format="int8"))
    assert d.int8_storage_bytes <= get_profile("nrf52840").flash_bytes


def test_template_errors():
    with pytest.raises(EdgekdError) as e:
        template_spec("transformer", [64], 5)
    assert "mlp" in one_line(e)
    with pytest.raises(EdgekdError) as e:
        template_spec("conv2d", [64, 3], 5)
    one_line(e)


def test_design_to_dict_is_json():
    import json
    d = design(TEACHER, Constraints(storage_bytes=8192))
    out = json.loads(json.dumps(d.to_dict()))
    assert out["binding"] == "storage" and out["spec"] == d.spec


# -- measurement ------------------------------------------------------------------------------

def test_measure_flops_positive():
    r = measure_flops(seconds=0.05)
    assert r["dense_flops_per_s"] > 0 and r["conv_flops_per_s"] > 0
    assert isinstance(r["blas_threads_limited"], bool)


@pytest.mark.parametrize("board", ["nrf52840", "stm32f746", "esp32-s3"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_board_training_ram_constrains_the_design(board, optimizer):
    """ram_for board-train: the board's whole training arena (board_memory.py, what the
    firmware allocates), settle bytes of the data included, fits the RAM the firmware
    leaves; a student one step wider would not, or the size cap decided."""
    from edgekd.design.board_memory import designed_plan
    p = get_profile(board)
    teacher = mlp(512, 512)
    c = Constraints.from_profile(p, ram_for="board-train", optimizer=optimizer,
                                 train_samples=1437, max_teacher_fraction=None)
    d = design(teacher, c)
    plan = designed_plan(d.spec, optimizer, 32, samples=1437)
    assert d.board_train == plan and plan["settle"] == 1440
    assert plan["arena"] <= p.model_ram_bytes
    assert d.binding in ("ram", "none", "storage", "latency")
    if d.binding == "ram":
        assert plan["arena"] > 0.8 * p.model_ram_bytes
    tight = design(teacher, dataclasses.replace(c, ram_bytes=plan["arena"] - 1))
    assert tight.board_train["arena"] <= plan["arena"] - 1 and tight.params < d.params


def test_board_training_design_refuses_what_no_board_trains():
    with pytest.raises(EdgekdError) as e:
        design(CONV1D_TEACHER, Constraints.from_profile(get_profile("nrf52840"),
                                                        ram_for="board-train"))
    assert "dense" in one_line(e)
    with pytest.raises(EdgekdError) as e:
        Constraints.from_profile(get_profile("pi-zero"), ram_for="board-train")
    assert "microcontroller" in one_line(e)
    with pytest.raises(EdgekdError) as e:
        design(TEACHER, Constraints.from_profile(get_profile("nrf52840"), ram_for="board-train",
                                                 ram_bytes=4096))
    assert "board training arena" in one_line(e)
    wide = mlp(64, n_in=20_000)    # not one sample fits a board's frame
    with pytest.raises(EdgekdError) as e:
        design(wide, Constraints.from_profile(get_profile("nrf52840"), ram_for="board-train"))
    assert "does not fit the firmware's 2,048-byte frames" in one_line(e)
