"""Teacher backends: ONNX (onnxruntime), TFLite (ai-edge-litert), precomputed logits (.npy).

The ONNX and TFLite models are built here, from the weights of an edgekd MLP, with the `onnx`
helper API and with the TFLite flatbuffer schema that ai-edge-litert ships
(`ai_edge_litert.schema_py_generated`), so no TensorFlow or PyTorch is needed; each backend
must agree with edgekd's own inference on the same weights.
"""

import subprocess
import sys

import numpy as np
import pytest

from edgekd.workflows import train_student
from edgekd.data import Dataset
from edgekd.distill.config import TrainConfig
from edgekd.errors import EdgekdError
from edgekd.link.local import LocalSource
from edgekd.nn.model import Sequential
from edgekd.teachers import NativeTeacher, load_teacher

IN, HID, CLASSES = 12, 16, 4
SPEC = {"input_shape": [IN], "num_classes": CLASSES,
        "layers": [{"type": "dense", "units": HID, "activation": "relu"},
                   {"type": "dense", "units": CLASSES}]}


@pytest.fixture(scope="module")
def mlp():
    """An edgekd MLP with non-zero biases, so that every parameter matters."""
    model = Sequential(SPEC, seed=3)
    rng = np.random.default_rng(7)
    for layer in model.layers:
        layer.params["bias"][...] = rng.normal(0, 0.5, layer.params["bias"].shape)
    return model


def weights(model):
    return [(layer.params["kernel"].copy(), layer.params["bias"].copy()) for layer in model.layers]


def inputs(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, IN)).astype(np.float32)


def small_dataset(n_train=40, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset("tiny", rng.normal(size=(n_train, IN)), rng.integers(0, CLASSES, n_train),
                   rng.normal(size=(n_test, IN)), rng.integers(0, CLASSES, n_test),
                   num_classes=CLASSES)


def test_importing_teachers_loads_no_optional_package():
    code = ("import edgekd.teachers, sys; "
            "print([m for m in ('onnxruntime', 'ai_edge_litert') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_extension_is_one_line(tmp_path):
    p = tmp_path / "teacher.pt"
    p.write_bytes(b"x")
    with pytest.raises(EdgekdError, match=r"unsupported teacher format") as e:
        load_teacher(p)
    assert "\n" not in str(e.value)


def test_native_teacher_still_loads(mlp, tmp_path):
    from edgekd.nn.io import save_model
    save_model(tmp_path / "t.npz", mlp)
    t = load_teacher(tmp_path / "t.npz")
    assert isinstance(t, NativeTeacher) and t.num_classes == CLASSES and t.input_shape == (IN,)
    np.testing.assert_array_equal(t.logits(inputs(5)), mlp.predict(inputs(5)))


# ---------------------------------------------------------------------------------- ONNX

def onnx_mlp(model, path, batch="n", feature_dim=IN, two_inputs=False, input_type=None):
    """MatMul + Add + Relu + MatMul + Add with the weights of an edgekd MLP."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    (k1, b1), (k2, b2) = weights(model)
    inits = [numpy_helper.from_array(a, name) for a, name in
             ((k1, "k1"), (b1, "b1"), (k2, "k2"), (b2, "b2"))]
    nodes = [helper.make_node("MatMul", ["x", "k1"], ["h0"]),
             helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]),
             helper.make_node("MatMul", ["h2", "k2"], ["h3"]),
             helper.make_node("Add", ["h3", "b2"], ["logits"])]
    ins = [helper.make_tensor_value_info("x", input_type or TensorProto.FLOAT, [batch, feature_dim])]
    if two_inputs:
        ins.append(helper.make_tensor_value_info("unused", TensorProto.FLOAT, [batch, 1]))
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, CLASSES])
    graph = helper.make_graph(nodes, "mlp", ins, [out], initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                          producer_name="edgekd-test")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


@pytest.fixture
def ort():
    return pytest.importorskip("onnxruntime")


def test_onnx_teacher_matches_edgekd_inference(mlp, tmp_path, ort):
    from edgekd.teachers.onnx_teacher import OnnxTeacher
    t = load_teacher(onnx_mlp(mlp, tmp_path / "t.onnx"))
    assert isinstance(t, OnnxTeacher)
    assert (t.num_classes, t.input_shape, t.per_sample) == (CLASSES, (IN,), False)
    x = inputs(600)            # more than one chunk
    y = t.logits(x)
    assert y.dtype == np.float32 and y.shape == (600, CLASSES)
    np.testing.assert_allclose(y, mlp.predict(x), atol=1e-5, rtol=1e-5)
    assert t.logits(x[:0]).shape == (0, CLASSES)


def test_onnx_teacher_with_batch_fixed_at_one_runs_per_sample(mlp, tmp_path, ort):
    t = load_teacher(onnx_mlp(mlp, tmp_path / "b1.onnx", batch=1))
    assert t.per_sample and t.input_shape == (IN,)
    x = inputs(7, seed=1)
    np.testing.assert_allclose(t.logits(x), mlp.predict(x), atol=1e-5, rtol=1e-5)


def test_onnx_teacher_drives_a_training_run(mlp, tmp_path, ort):
    data = small_dataset(64, 16)
    t = load_teacher(onnx_mlp(mlp, tmp_path / "t.onnx"))
    cfg = TrainConfig(epochs=2, batch=16, lr=0.01)
    student = {**SPEC, "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                  {"type": "dense", "units": CLASSES}]}
    res = train_student(student, LocalSource(t, data), cfg, str(tmp_path / "run"))
    assert res["epochs_run"] >= 1 and res["bytes_down"] > 0


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", bytes(range(256)) * 8])
def test_onnx_garbage_file_is_one_line_error(tmp_path, ort, content):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(EdgekdError, match=r"bad\.onnx: not a valid ONNX model") as e:
        load_teacher(p)
    assert "\n" not in str(e.value)


def test_onnx_missing_file(tmp_path, ort):
    with pytest.raises(EdgekdError, match="no such ONNX file"):
        load_teacher(tmp_path / "missing.onnx")


def test_onnx_two_inputs_refused(mlp, tmp_path, ort):
    with pytest.raises(EdgekdError, match="has 2 inputs"):
        load_teacher(onnx_mlp(mlp, tmp_path / "two.onnx", two_inputs=True))


def test_onnx_unknown_feature_size_refused(mlp, tmp_path, ort):
    with pytest.raises(EdgekdError, match="every axis but the batch axis must be a known number"):
        load_teacher(onnx_mlp(mlp, tmp_path / "sym.onnx", feature_dim="f"))


def test_onnx_batch_fixed_above_one_refused(mlp, tmp_path, ort):
    with pytest.raises(EdgekdError, match="batch axis fixed at 4"):
        load_teacher(onnx_mlp(mlp, tmp_path / "b4.onnx", batch=4))


def test_onnx_non_float_input_refused(mlp, tmp_path, ort):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    node = helper.make_node("Cast", ["x"], ["logits"], to=TensorProto.FLOAT)
    graph = helper.make_graph([node], "cast", [helper.make_tensor_value_info(
        "x", TensorProto.INT32, ["n", CLASSES])], [helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, ["n", CLASSES])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "int.onnx"))
    with pytest.raises(EdgekdError, match="float32 input"):
        load_teacher(tmp_path / "int.onnx")


def test_onnx_wrong_sample_shape_is_one_line(mlp, tmp_path, ort):
    t = load_teacher(onnx_mlp(mlp, tmp_path / "t.onnx"))
    with pytest.raises(EdgekdError, match=r"samples of shape \[12\], got \[5\]"):
        t.logits(np.zeros((2, 5), np.float32))


def test_onnx_missing_runtime_says_what_to_install(mlp, tmp_path, monkeypatch):
    p = tmp_path / "t.onnx"
    p.write_bytes(b"whatever")        # the import is checked before the file is parsed
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(EdgekdError, match=r"t\.onnx: .*onnxruntime.*edgekd\[host\]") as e:
        load_teacher(p)
    assert "\n" not in str(e.value)


# -------------------------------------------------------------------------------- TFLite

class _FlatModel:
    """A TFLite model under construction with the schema's object API: buffers, tensors,
    operator codes and operators, appended in order."""

    def __init__(self, schema, batch_sig):
        self.s, self.batch_sig = schema, batch_sig
        self.buffers, self.tensors, self.ops, self.codes = [schema.BufferT()], [], [], []

    def buffer(self, arr):
        b = self.s.BufferT()
        b.data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), np.uint8).tolist()
        self.buffers.append(b)
        return len(self.buffers) - 1

    def tensor(self, shape, name, data=None, typ=None, quant=None, batch=False):
        s = self.s
        t = s.TensorT()
        t.shape, t.name = list(shape), name
        t.type = s.TensorType.FLOAT32 if typ is None else typ
        t.buffer = 0 if data is None else self.buffer(data)
        if batch:
            t.shapeSignature = [self.batch_sig, *shape[1:]]
        if quant is not None:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(quant[0])], [int(quant[1])]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def opcode(self, code):
        for i, c in enumerate(self.codes):
            if c.builtinCode == code:
                return i
        c = self.s.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
        self.codes.append(c)
        return len(self.codes) - 1

    def operator(self, code, ins, outs, options=None):
        op = self.s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.opcode(code), ins, outs
        if options is not None:
            op.builtinOptionsType = self.s.BuiltinOptions.FullyConnectedOptions
            op.builtinOptions = options
        self.ops.append(op)

    def dense(self, i, cur, k, b, relu, act_type, scales):
        """A FULLY_CONNECTED of kernel k [in, out] and bias b reading tensor `cur`; with
        `scales` (per tensor, input first) int8 weights and int32 biases."""
        s, units = self.s, k.shape[1]
        if scales:
            w_scale = float(np.abs(k).max()) / 127
            kq = np.clip(np.round(k.T / w_scale), -127, 127).astype(np.int8)
            b_scale = scales[i][0] * w_scale
            bq = np.round(b / b_scale).astype(np.int32)
            w = self.tensor([units, k.shape[0]], f"w{i}", kq, s.TensorType.INT8, (w_scale, 0))
            bias = self.tensor([units], f"b{i}", bq, s.TensorType.INT32, (b_scale, 0))
            y = self.tensor([1, units], f"y{i}", typ=act_type, quant=scales[i + 1], batch=True)
        else:
            w = self.tensor([units, k.shape[0]], f"w{i}", np.ascontiguousarray(k.T, np.float32))
            bias = self.tensor([units], f"b{i}", np.asarray(b, np.float32))
            y = self.tensor([1, units], f"y{i}", batch=True)
        opts = s.FullyConnectedOptionsT()
        opts.fusedActivationFunction = (s.ActivationFunctionType.RELU if relu
                                        else s.ActivationFunctionType.NONE)
        self.operator(s.BuiltinOperator.FULLY_CONNECTED, [cur, w, bias], [y], opts)
        return y

    def finish(self, inputs, outputs, description):
        import flatbuffers
        s = self.s
        g = s.SubGraphT()
        g.tensors, g.inputs, g.operators, g.name = self.tensors, inputs, self.ops, "main"
        g.outputs = outputs
        m = s.ModelT()
        m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, self.codes, [g], self.buffers
        m.description = description
        builder = flatbuffers.Builder(4096)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _activation_scales(x, k1, b1, k2, b2):
    """Per-tensor affine (scale, zero point) of the input, hidden and output activations."""
    h = np.maximum(x @ k1 + b1, 0)
    scales = []
    for a in (x, h, h @ k2 + b2):
        lo, hi = min(float(a.min()), 0.0), max(float(a.max()), 0.0)
        scale = (hi - lo) / 255
        scales.append((scale, round(-128 - lo / scale)))
    return scales


def tflite_mlp(model, path, quantized=False, batch_sig=-1, reshape=False, two_outputs=False,
               calibration=None):
    """A FULLY_CONNECTED(relu) + FULLY_CONNECTED model with the weights of an edgekd MLP, built
    directly with the TFLite flatbuffer schema that ai-edge-litert ships. With `quantized`, a
    full-integer int8 model (int8 input and output, int8 weights, int32 biases) calibrated on
    `calibration`. `reshape` puts a RESHAPE to a constant [1, IN] first, as converters do for
    batch-1 graphs, so that the batch axis cannot be resized."""
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert import schema_py_generated as s

    f = _FlatModel(s, batch_sig)
    (k1, b1), (k2, b2) = weights(model)
    act_type = s.TensorType.INT8 if quantized else s.TensorType.FLOAT32
    scales = _activation_scales(calibration, k1, b1, k2, b2) if quantized else []
    x_t = f.tensor([1, IN], "x", typ=act_type, quant=scales[0] if quantized else None, batch=True)
    cur = x_t
    if reshape:
        shape_t = f.tensor([2], "shape", np.array([1, IN], np.int32), s.TensorType.INT32)
        r = f.tensor([1, IN], "x_1", typ=act_type, quant=scales[0] if quantized else None)
        f.operator(s.BuiltinOperator.RESHAPE, [cur, shape_t], [r])
        cur = r
    for i, (k, b, relu) in enumerate(((k1, b1, True), (k2, b2, False))):
        cur = f.dense(i, cur, k, b, relu, act_type, scales)
    outputs = [cur, cur - 1] if two_outputs else [cur]
    path.write_bytes(f.finish([x_t], outputs, "edgekd test MLP"))
    return path


@pytest.fixture
def litert():
    return pytest.importorskip("ai_edge_litert.interpreter")


def test_tflite_float_teacher_matches_edgekd_inference(mlp, tmp_path, litert):
    from edgekd.teachers.tflite_teacher import TfliteTeacher
    t = load_teacher(tflite_mlp(mlp, tmp_path / "t.tflite"))
    assert isinstance(t, TfliteTeacher)
    assert (t.num_classes, t.input_shape) == (CLASSES, (IN,))
    x = inputs(300)             # a full chunk and a remainder: two resizes
    y = t.logits(x)
    assert y.dtype == np.float32 and y.shape == (300, CLASSES) and not t.per_sample
    np.testing.assert_allclose(y, mlp.predict(x), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(t.logits(x[:1]), mlp.predict(x[:1]), atol=1e-5, rtol=1e-5)


def test_tflite_graph_that_cannot_be_batched_runs_per_sample(mlp, tmp_path, litert):
    t = load_teacher(tflite_mlp(mlp, tmp_path / "r.tflite", batch_sig=1, reshape=True))
    x = inputs(9, seed=2)
    np.testing.assert_allclose(t.logits(x), mlp.predict(x), atol=1e-5, rtol=1e-5)
    assert t.per_sample
    np.testing.assert_allclose(t.logits(x[::-1]), mlp.predict(x[::-1]), atol=1e-5, rtol=1e-5)


def test_tflite_int8_teacher_quantizes_and_dequantizes(mlp, tmp_path, litert):
    x = inputs(200, seed=5)
    t = load_teacher(tflite_mlp(mlp, tmp_path / "q.tflite", quantized=True, calibration=x))
    assert t.in_dtype == np.int8 and t.out_q is not None
    y, ref = t.logits(x), mlp.predict(x)
    assert y.dtype == np.float32
    spread = float(ref.max() - ref.min())
    assert np.abs(y - ref).max() < 4 * t.out_q[0] < 0.05 * spread   # a few int8 steps
    assert (y.argmax(1) == ref.argmax(1)).mean() > 0.9


@pytest.mark.parametrize("content", [b"", b"garbage garbage garbage", bytes(range(256)) * 8])
def test_tflite_garbage_file_is_one_line_error(tmp_path, litert, content):
    p = tmp_path / "bad.tflite"
    p.write_bytes(content)
    with pytest.raises(EdgekdError, match=r"bad\.tflite: not a valid TFLite model") as e:
        load_teacher(p)
    assert "\n" not in str(e.value)


def test_tflite_two_outputs_refused(mlp, tmp_path, litert):
    with pytest.raises(EdgekdError, match="has 2 outputs"):
        load_teacher(tflite_mlp(mlp, tmp_path / "two.tflite", two_outputs=True))


def test_tflite_missing_runtime_says_what_to_install(tmp_path, monkeypatch):
    p = tmp_path / "t.tflite"
    p.write_bytes(b"whatever")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(EdgekdError, match=r"t\.tflite: .*ai-edge-litert.*edgekd\[host\]") as e:
        load_teacher(p)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------- precomputed

def test_precomputed_round_trip(tmp_path):
    from edgekd.teachers.precomputed import PrecomputedTeacher
    data = small_dataset()
    table = np.random.default_rng(1).normal(size=(len(data.x_train), CLASSES))
    np.save(tmp_path / "logits.npy", table)         # float64 on disk: served as float32
    t = load_teacher(tmp_path / "logits.npy", data)
    assert isinstance(t, PrecomputedTeacher)
    assert (t.num_classes, t.input_shape) == (CLASSES, (IN,))
    ids = np.array([5, 0, 39, 5, 17])
    y = t.logits(data.x_train[ids])
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, table[ids].astype(np.float32))
    np.testing.assert_array_equal(t.logits_for(ids, "train"), y)
    assert t.logits(data.x_train[:0]).shape == (0, CLASSES)


def test_precomputed_teacher_drives_a_training_run(tmp_path, mlp):
    data = small_dataset(64, 16)
    np.save(tmp_path / "logits.npy", mlp.predict(data.x_train))
    t = load_teacher(tmp_path / "logits.npy", data)
    cfg = TrainConfig(epochs=2, batch=16, lr=0.01)      # validation rows come from train
    res = train_student(SPEC, LocalSource(t, data), cfg, str(tmp_path / "run"))
    assert res["epochs_run"] >= 1


def test_precomputed_rows_outside_training_split_refused(tmp_path):
    data = small_dataset()
    np.save(tmp_path / "logits.npy", np.zeros((len(data.x_train), CLASSES), np.float32))
    t = load_teacher(tmp_path / "logits.npy", data)
    with pytest.raises(EdgekdError, match="precomputed logits cover the training split only"):
        t.logits(data.x_test[:3])
    with pytest.raises(EdgekdError, match="precomputed logits cover the training split only"):
        t.logits_for([0], "test")
    with pytest.raises(EdgekdError, match="out of range"):
        t.logits_for([len(data.x_train)])


def test_precomputed_misaligned_shape_refused(tmp_path):
    data = small_dataset()
    np.save(tmp_path / "short.npy", np.zeros((len(data.x_train) - 1, CLASSES), np.float32))
    with pytest.raises(EdgekdError, match=r"shape \[39, 4\].*needs \[40, classes\]"):
        load_teacher(tmp_path / "short.npy", data)
    np.save(tmp_path / "flat.npy", np.zeros(len(data.x_train), np.float32))
    with pytest.raises(EdgekdError, match="needs"):
        load_teacher(tmp_path / "flat.npy", data)


@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "inf")])
def test_precomputed_non_finite_refused(tmp_path, value, kind):
    data = small_dataset()
    table = np.zeros((len(data.x_train), CLASSES), np.float32)
    table[7, 2] = value
    np.save(tmp_path / "bad.npy", table)
    with pytest.raises(EdgekdError, match=rf"logits\[7, 2\] is {kind}"):
        load_teacher(tmp_path / "bad.npy", data)


def test_precomputed_overflow_to_float32_refused(tmp_path):
    data = small_dataset()
    table = np.zeros((len(data.x_train), CLASSES))
    table[3, 1] = 1e300
    np.save(tmp_path / "big.npy", table)
    with pytest.raises(EdgekdError, match=r"logits\[3, 1\] is inf after conversion to float32"):
        load_teacher(tmp_path / "big.npy", data)


def test_precomputed_bad_files_refused(tmp_path):
    data = small_dataset()
    np.save(tmp_path / "int.npy", np.zeros((len(data.x_train), CLASSES), np.int32))
    with pytest.raises(EdgekdError, match="float array"):
        load_teacher(tmp_path / "int.npy", data)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(EdgekdError, match="pickle"):
        load_teacher(tmp_path / "obj.npy", data)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(EdgekdError, match="not a valid .npy file"):
        load_teacher(tmp_path / "junk.npy", data)
    with pytest.raises(EdgekdError, match="need the data set"):
        load_teacher(tmp_path / "junk.npy")
    with pytest.raises(EdgekdError, match="no such .npy file"):
        load_teacher(tmp_path / "missing.npy", data)
