"""Soft-label rows per second one `edgekd serve` host delivers to 1 and to 8 devices, end to end
over real loopback TCP (teacher forward + encode + frames + socket), per teacher backend.

    python benchmarks/serve_rate.py [--sets digits sensor] [--devices 1 8] [--seconds 5] [--json]

The host is the real `edgekd serve` in its own process, once with the teacher on edgekd's own
path (`--backend numba` when numba can start here, else numpy; the table says which) and once
with the same teacher exported to ONNX and run by onnxruntime. The devices are real
`edgekd.link.client.LinkSource` clients in their own processes. "drain" devices only receive
and acknowledge batches (no training, no halting: every sample every epoch), so the figure is
what the host can deliver; one "train" row has devices really training the set's student by KD
(default halting), for how much of the host a training device uses.

Teachers and students are benchmarks/link_bytes.py's SETS: digits (MLP 64-256-256-10) and the
synthetic sensor set (a conv1d teacher). The ONNX teacher is written here with the `onnx`
helper API from the edgekd teacher's weights (edgekd has no ONNX exporter) and checked to give
the same logits before anything is timed.

rows/s and MB/s are per wall second, all devices together; `host cpu` is the host process's CPU
time over the run as a share of one core; `rows/s per host core` is rows per host CPU second,
so a busy neighbour on the machine or devices too slow to saturate the host do not change it.
By default the host (every thread of it, onnxruntime's thread pool included) is pinned to one
CPU and the devices to the others (when there are >= 2); onnxruntime runs with the session
options edgekd's ONNX teacher gives it (its default thread pool).
"""

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ONE_THREAD = {v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                               "NUMBA_NUM_THREADS")}
BATCH = 32


# ------------------------------------------------------------------------------- teachers

def export_onnx(model, path):
    """Write an edgekd model (dense, conv1d, maxpool1d/avgpool1d, global_avgpool, flatten) as
    ONNX: channels-last input [batch, *input_shape], logits out, batch axis symbolic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from edgekd.kernels.conv import same_padding
    nodes, inits, n = [], [], [0]

    def name(prefix):
        n[0] += 1
        return f"{prefix}{n[0]}"

    def node(op, inputs, **attrs):
        out = name(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def const(a, prefix):
        nm = name(prefix)
        inits.append(numpy_helper.from_array(a, nm))
        return nm

    def activation(x, act):
        if act == "relu":
            return node("Relu", [x])
        if act == "tanh":
            return node("Tanh", [x])
        if act == "relu6":
            import numpy as np
            return node("Clip", [x, const(np.float32(0), "lo"), const(np.float32(6), "hi")])
        return x

    x, channels_first = "x", False
    for layer in model.layers:
        kind, cfg = layer.type, layer.cfg
        if kind == "dense":
            if channels_first:
                raise SystemExit("export_onnx: dense after a conv needs flatten or global_avgpool")
            x = node("MatMul", [x, const(layer.params["kernel"], "k")])
            x = activation(node("Add", [x, const(layer.params["bias"], "b")]), cfg["activation"])
        elif kind == "conv1d":
            if not channels_first:
                x, channels_first = node("Transpose", [x], perm=[0, 2, 1]), True
            k, s = cfg["kernel_size"], cfg["stride"]
            pads = (same_padding(layer.in_shape[0], k, s) if cfg["padding"] == "same"
                    else (0, 0))
            w = layer.params["kernel"].transpose(2, 1, 0).copy()   # [k, cin, f] -> [f, cin, k]
            x = node("Conv", [x, const(w, "k"), const(layer.params["bias"], "b")],
                     kernel_shape=[k], strides=[s], pads=list(pads))
            x = activation(x, cfg["activation"])
        elif kind in ("maxpool1d", "avgpool1d"):
            if not channels_first:
                x, channels_first = node("Transpose", [x], perm=[0, 2, 1]), True
            p = cfg["pool_size"]
            s = cfg["stride"] if cfg["stride"] is not None else p
            x = node("MaxPool" if kind == "maxpool1d" else "AveragePool", [x],
                     kernel_shape=[p], strides=[s])
        elif kind == "global_avgpool":
            if not channels_first:
                x, channels_first = node("Transpose", [x], perm=[0, 2, 1]), True
            x = node("Flatten", [node("GlobalAveragePool", [x])], axis=1)
            channels_first = False
        elif kind == "flatten":
            if channels_first:
                x, channels_first = node("Transpose", [x], perm=[0, 2, 1]), False
            x = node("Flatten", [x], axis=1)
        else:
            raise SystemExit(f"export_onnx: no ONNX form written for layer type {kind!r}")
    nodes.append(helper.make_node("Identity", [x], ["logits"]))
    graph = helper.make_graph(
        nodes, "teacher",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *model.input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", model.num_classes])],
        initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                          producer_name="edgekd-benchmarks")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)


def prepare(set_name, workdir, teacher_epochs):
    """(teacher .npz, teacher .onnx, student spec path, teacher accuracy, max |logit diff|):
    trained once per workdir, the ONNX copy checked against edgekd's own inference."""
    import numpy as np
    from link_bytes import SETS
    from edgekd.data import load_dataset
    from edgekd.teachers import load_teacher
    from edgekd.workflows import train_teacher
    s, data = SETS[set_name], load_dataset(set_name)
    npz = os.path.join(workdir, f"teacher-{set_name}-{teacher_epochs}.npz")
    if not os.path.exists(npz):
        train_teacher(s["teacher"], data, npz, teacher_epochs)
    native = load_teacher(npz)
    student = os.path.join(workdir, f"student-{set_name}.json")
    with open(student, "w") as f:
        json.dump(s["student"], f)
    onnx_path = os.path.join(workdir, f"teacher-{set_name}-{teacher_epochs}.onnx")
    try:
        export_onnx(native.model, onnx_path)
        import onnxruntime  # noqa: F401
    except ImportError:
        return npz, None, student, None, None
    x = data.x_test[:256]
    want = native.logits(x)
    got = load_teacher(onnx_path).logits(x)
    diff = float(np.abs(got - want).max())
    if diff > 1e-4 * max(1.0, float(np.abs(want).max())):
        raise SystemExit(f"{set_name}: the ONNX teacher differs from edgekd's by {diff:g}")
    acc = float((want.argmax(1) == data.y_test[:256]).mean())
    return npz, onnx_path, student, acc, diff


# ------------------------------------------------------------------------------ processes

def cpu_sets(pin):
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def pinned(cpus):
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_host(teacher, set_name, backend, devices, cpus):
    """`edgekd serve` on a free loopback port; returns (process, port)."""
    cmd = [sys.executable, "-m", "edgekd", "serve", "--teacher", teacher, "--data", set_name,
           "--bind", "127.0.0.1:0", "--json", "--max-devices", str(max(devices, 1)),
           "--backend", backend]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, **ONE_THREAD}, preexec_fn=pinned(cpus))
    ready, _, _ = select.select([p.stdout], [], [], 600)
    line = p.stdout.readline() if ready else ""
    if not line:
        p.kill()
        raise SystemExit(f"edgekd serve did not start ({' '.join(cmd)})")
    if cpus:  # onnxruntime sets its own workers' affinity: hold every host thread to `cpus`
        for tid in os.listdir(f"/proc/{p.pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass
    return p, json.loads(line)["port"]


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def readline(p, timeout, what):
    """A line from a worker, or a clear exit when it says nothing for `timeout` seconds."""
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    if not ready:
        raise SystemExit(f"{what}: no answer in {timeout:g} s")
    return p.stdout.readline()


def run_devices(host, port, n, mode, cpus, seconds, warm, epochs, student, codec, backend):
    """Start n device workers, let each connect and warm up, start them together, collect their
    results; returns (results, host CPU seconds, wall seconds)."""
    args = [sys.executable, __file__, "--worker", mode, str(port), str(seconds), str(warm),
            str(epochs), student, codec, backend]
    env = {**os.environ, **ONE_THREAD}
    procs = [subprocess.Popen(args + [str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, preexec_fn=pinned(cpus))
             for i in range(n)]
    try:
        limit = 300 + 60 * seconds + 120 * epochs
        for p in procs:
            line = readline(p, limit, f"a {mode} device starting")
            if line.strip() != "ready":
                raise SystemExit(f"a {mode} device failed before starting: "
                                 f"{(p.communicate(timeout=30)[1].strip().splitlines() or ['?'])[-1]}")
        c0, t0 = cpu_seconds(host.pid), time.time()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            line = readline(p, limit, f"a {mode} device running")
            if not line.strip():
                raise SystemExit(f"a {mode} device failed: "
                                 f"{(p.communicate(timeout=30)[1].strip().splitlines() or ['?'])[-1]}")
            results.append(json.loads(line))
        c1, t1 = cpu_seconds(host.pid), time.time()
    finally:
        for p in procs:
            try:
                p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
    return results, c1 - c0, t1 - t0


def measure(set_name, backend_label, teacher, host_backend, n, mode, a, student, pins):
    host_cpus, device_cpus = pins
    host, port = start_host(teacher, set_name, host_backend, n, host_cpus)
    try:
        if mode == "train":  # the host's first teacher calls load its kernels: not timed
            run_devices(host, port, 1, "drain", device_cpus, 0.1, a.warm, 0, student, a.codec,
                        host_backend)
        results, host_cpu, wall = run_devices(host, port, n, mode, device_cpus, a.seconds,
                                              a.warm, a.train_epochs, student, a.codec,
                                              host_backend)
    finally:
        stop(host)
    rows = sum(r["rows"] for r in results)
    down = sum(r["bytes_down"] for r in results)
    span = max(r["t_end"] for r in results) - min(r["t_go"] for r in results)
    row = {"set": set_name, "teacher": backend_label, "devices": n, "mode": mode,
           "rows": rows, "bytes_down": down, "rows_per_s": rows / span, "mb_per_s": down / span / 1e6,
           "host_cpu_s": host_cpu, "host_cpu_share": host_cpu / wall,
           "rows_per_host_cpu_s": rows / host_cpu if host_cpu > 0 else None,
           "seconds": span, "codec": a.codec}
    if mode == "train":
        row["device_rows_per_s"] = [r["rows"] / (r["t_end"] - r["t_go"]) for r in results]
        row["test_accuracy"] = [r["test_accuracy"] for r in results]
    return row


# --------------------------------------------------------------------------------- worker

def worker(mode, port, seconds, warm, epochs, student_path, codec, backend, index):
    """One device: connect, warm up, say `ready`, wait for `go`, then drain for `seconds`
    (or train `epochs` epochs) and print one JSON line."""
    import numpy as np
    from edgekd.link.client import LinkSource
    from edgekd.link.transport import dial_tcp
    from edgekd.source import Hello
    x_codec = "f32" if codec == "f32" else "u8"
    with open(student_path) as f:
        spec = json.load(f)
    src = LinkSource(lambda: dial_tcp("127.0.0.1", port, 30.0), codec=codec, x_codec=x_codec)
    if mode == "train":
        return train_worker(src, spec, epochs, backend, index)
    src.open(Hello(index, BATCH, 0.0, tuple(spec["input_shape"]), spec["num_classes"]))
    none = np.zeros(0, np.int64)
    epoch, got = 0, 0
    while got < warm:               # the host's first teacher calls load its kernels
        for cursor, b in enumerate(src.epoch(epoch), 1):
            src.report(epoch, cursor, none, none)
            got += 1
        epoch += 1
    print("ready", flush=True)
    sys.stdin.readline()
    t_go = time.time()
    src.bytes_down = 0
    rows, deadline, done = 0, t_go + seconds, False
    while not done:
        for cursor, b in enumerate(src.epoch(epoch), 1):
            rows += len(b.ids)
            src.report(epoch, cursor, none, none)
            if time.time() >= deadline:
                done = True
                break
        epoch += 1
    t_end = time.time()
    print(json.dumps({"rows": rows, "bytes_down": src.bytes_down + src.t.received,
                      "t_go": t_go, "t_end": t_end}), flush=True)
    src.close()


def train_worker(src, spec, epochs, backend_name, index):
    """A real training device: edgekd's trainer on the host's kernel backend, rows counted as they
    arrive. The student's kernels load before `go`."""
    from edgekd.distill.config import TrainConfig
    from edgekd.kernels import backend
    from edgekd.workflows import train_student
    backend.select(backend_name)
    backend.warm_up()
    rows, bytes_down = [0], [0]
    inner = src.epoch

    def counted(epoch, plan=None):
        for b in inner(epoch, plan):
            rows[0] += len(b.ids)
            yield b
    src.epoch = counted
    print("ready", flush=True)
    sys.stdin.readline()
    t_go = time.time()
    with tempfile.TemporaryDirectory() as out:
        res = train_student(spec, src, TrainConfig(epochs=epochs, seed=index), out)
    bytes_down[0] = res["bytes_down"]
    print(json.dumps({"rows": rows[0], "bytes_down": bytes_down[0], "t_go": t_go,
                      "t_end": time.time(), "test_accuracy": res["test_accuracy"]}), flush=True)


# ----------------------------------------------------------------------------------- main

def edgekd_backend(choice):
    from edgekd.kernels.backend import numba_available
    if choice == "auto":
        return "numba" if numba_available() else "numpy"
    return choice


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["digits", "sensor"], choices=["digits", "sensor"])
    ap.add_argument("--devices", nargs="+", type=int, default=[1, 8],
                    help="drain device counts (one row each per set and teacher backend)")
    ap.add_argument("--train-devices", type=int, default=8,
                    help="devices in the training row (digits, edgekd teacher; 0 skips it)")
    ap.add_argument("--train-epochs", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=5.0, help="drain time per row")
    ap.add_argument("--warm", type=int, default=20, help="batches each device drains untimed first")
    ap.add_argument("--teacher-epochs", type=int, default=None,
                    help="teacher training epochs (default: link_bytes.py's per set)")
    ap.add_argument("--codec", default="topk", choices=["topk", "f16", "f32"],
                    help="soft-label codec (inputs go u8, or f32 beside f32)")
    ap.add_argument("--backend", default="auto", choices=["auto", "numba", "numpy"],
                    help="edgekd's teacher kernels on the host and the training devices' kernels "
                         "(auto: numba when it can start here)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin host and devices to CPUs")
    ap.add_argument("--workdir", help="keep trained teachers here (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        mode, port, seconds, warm, epochs, student, codec, backend, index = a.worker
        return worker(mode, int(port), float(seconds), int(warm), int(epochs), student, codec,
                      backend, int(index))
    sys.path.insert(0, HERE)
    os.environ.update(ONE_THREAD)
    from link_bytes import SETS
    own = edgekd_backend(a.backend)
    pins = cpu_sets(not a.no_pin)
    workdir = a.workdir or tempfile.mkdtemp(prefix="edgekd-serve-rate-")
    os.makedirs(workdir, exist_ok=True)
    rows, notes = [], []
    for set_name in a.sets:
        epochs = a.teacher_epochs or SETS[set_name]["teacher_epochs"]
        npz, onnx_path, student, acc, diff = prepare(set_name, workdir, epochs)
        teachers = [(f"edgekd-{own}", npz, own)]
        if onnx_path:
            teachers.append(("onnxruntime", onnx_path, "numpy"))
            notes.append(f"{set_name}: ONNX teacher agrees with edgekd's to {diff:.1e} (max |logit "
                         f"difference|, 256 test samples); teacher accuracy {acc:.3f}")
        else:
            notes.append(f"{set_name}: onnx/onnxruntime not installed: no onnxruntime rows")
        for n in a.devices:
            for label, path, backend in teachers:
                rows.append(measure(set_name, label, path, backend, n, "drain", a, student, pins))
                print(f"  {set_name} {label} {n} drain done", file=sys.stderr)
    if a.train_devices:
        set_name = "digits" if "digits" in a.sets else a.sets[0]
        epochs = a.teacher_epochs or SETS[set_name]["teacher_epochs"]
        npz, _, student, _, _ = prepare(set_name, workdir, epochs)
        rows.append(measure(set_name, f"edgekd-{own}", npz, own, a.train_devices, "train", a,
                            student, pins))
    add_ratios(rows)
    result = {"rows": rows, "notes": notes, "edgekd_backend": own, "batch": BATCH,
              "pinned": pins[0] is not None,
              "host_cpus": sorted(pins[0]) if pins[0] else None, "seconds": a.seconds}
    if a.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return result


def add_ratios(rows):
    """onnxruntime over edgekd, rows per host CPU second, for the same set and devices."""
    own = {(r["set"], r["devices"]): r for r in rows
           if r["mode"] == "drain" and r["teacher"].startswith("edgekd")}
    for r in rows:
        base = own.get((r["set"], r["devices"]))
        if r["teacher"] == "onnxruntime" and base and base["rows_per_host_cpu_s"]:
            r["ort_over_edgekd"] = r["rows_per_host_cpu_s"] / base["rows_per_host_cpu_s"]


def print_table(result):
    head = (f"{'set':7} {'teacher':13} {'devices':>7} {'mode':6} {'rows/s':>9} {'MB/s':>7} "
            f"{'host cpu':>9} {'rows/s per host core':>21} {'ort/edgekd':>11}")
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        per = f"{r['rows_per_host_cpu_s']:,.0f}" if r["rows_per_host_cpu_s"] else "-"
        ratio = f"{r['ort_over_edgekd']:.2f}" if "ort_over_edgekd" in r else ""
        print(f"{r['set']:7} {r['teacher']:13} {r['devices']:>7} {r['mode']:6} "
              f"{r['rows_per_s']:>9,.0f} {r['mb_per_s']:>7.2f} {r['host_cpu_share']:>8.0%} "
              f"{per:>21} {ratio:>11}")
    pin = (f"host pinned to CPU {result['host_cpus'][0]}, devices to the others"
           if result["pinned"] else "not pinned")
    print(f"\nbatch {result['batch']}, codec {result['rows'][0]['codec']}, "
          f"{result['seconds']:g} s per drain row, {pin}; host cpu = host process CPU time / wall "
          f"time (100% = one core busy); rows/s per host core = rows / host CPU seconds")
    for r in result["rows"]:
        if r["mode"] == "train":
            per_dev = sum(r["device_rows_per_s"]) / len(r["device_rows_per_s"])
            print(f"train row: {r['devices']} devices training the {r['set']} student "
                  f"({r['rows']:,} rows), each taking {per_dev:,.0f} rows/s on average")
            feed = [d for d in result["rows"] if d["mode"] == "drain" and d["set"] == r["set"]
                    and d["teacher"] == r["teacher"] and d["rows_per_host_cpu_s"]]
            if feed:
                best = max(d["rows_per_host_cpu_s"] for d in feed)
                print(f"  one host core ({r['teacher']} teacher) feeds about {best / per_dev:.0f} "
                      f"such devices ({best:,.0f} rows per host CPU second / {per_dev:,.0f})")
    for n in result["notes"]:
        print(f"note: {n}")


if __name__ == "__main__":
    main()
