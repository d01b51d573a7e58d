"""What TLS costs the link: handshake time and streaming throughput over real loopback TCP,
plain vs TLS 1.3 (default suite) vs TLS 1.2 with AES-128-GCM or ChaCha20-Poly1305, and the
bytes the socket carried next to the frame (payload) bytes the halting figures use.

    python benchmarks/link_tls.py [--connects 40] [--epochs 5] [--repeats 3] [--json]
                                  [--cert C --key K]

Handshake: connect, (TLS,) CHALLENGE, HELLO, WELCOME, close — median of --connects.
Streaming: --epochs of naive f32 streaming of digits (every sample every epoch), each batch
acknowledged at once without training, so the time is the link's; median of --repeats;
payload MB/s = frame bytes / wall time. Ratios are against plain TCP.
"""

import argparse
import json
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from edgekd.data import load_dataset  # noqa: E402
from edgekd.source import Hello  # noqa: E402
from edgekd.link.client import LinkSource  # noqa: E402
from edgekd.link.server import SoftLabelServer  # noqa: E402
from edgekd.link.tls import ClientTls, fingerprint, server_context  # noqa: E402
from edgekd.link.transport import dial_tcp  # noqa: E402

TOKEN = "benchmark-" + "Zq8Rv3Lx7Nw2Pb6Tk1Yh5Mc9Gd4Fs0Ja"


class LinearTeacher:
    """A fixed random linear teacher: the benchmark measures the link, not the teacher."""
    num_classes, input_shape = 10, (64,)
    w = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)

    def logits(self, x):
        return np.asarray(x, np.float32).reshape(len(x), -1) @ self.w


def client_variants(fp):
    def tls12(cipher):
        t = ClientTls(fingerprint_hex=fp)
        t.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        t.ctx.set_ciphers(cipher)
        return t
    return [("plain TCP", None), ("TLS 1.3 (default)", ClientTls(fingerprint_hex=fp)),
            ("TLS 1.2 AES-128-GCM", tls12("ECDHE-ECDSA-AES128-GCM-SHA256")),
            ("TLS 1.2 ChaCha20-Poly1305", tls12("ECDHE-ECDSA-CHACHA20-POLY1305"))]


def handshake_ms(address, tls, n):
    times, cipher = [], None
    for _ in range(n):
        src = LinkSource(lambda: dial_tcp(*address, 10.0, tls), codec="f32", x_codec="f32",
                         token=TOKEN, retries=0)
        t0 = time.perf_counter()
        src.open(Hello(0, 32, 0.1, (64,), 10))
        times.append((time.perf_counter() - t0) * 1e3)
        obj = getattr(src.t.sock, "obj", None)
        cipher = obj.cipher()[0] if obj else "-"
        src.close()
    return statistics.median(times), cipher


def stream(address, tls, epochs, repeats):
    """Stream `epochs` f32 epochs and acknowledge each batch at once (no training step, so the
    time is the link's): (median wall s, frame bytes, socket bytes)."""
    walls = []
    for _ in range(repeats):
        src = LinkSource(lambda: dial_tcp(*address, 10.0, tls), codec="f32", x_codec="f32",
                         token=TOKEN, window=4)
        t0 = time.perf_counter()
        src.open(Hello(0, 32, 0.1, (64,), 10))
        for e in range(epochs):
            for c, _b in enumerate(src.epoch(e), 1):
                src.report(e, c, np.zeros(0, np.int64), np.zeros(0, np.int64))
        src.stop("benchmark done")
        walls.append(time.perf_counter() - t0)
        src.close()
    return statistics.median(walls), src.bytes_down + src.bytes_up, src.bytes_wire


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connects", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cert", help="the host's certificate (with --key): where `cryptography`, "
                                   "which makes a fresh pair, is absent (the ARM userlands)")
    ap.add_argument("--key")
    a = ap.parse_args()
    data = load_dataset("digits")
    with tempfile.TemporaryDirectory() as d:
        crt, key = a.cert or os.path.join(d, "h.crt"), a.key or os.path.join(d, "h.key")
        if a.cert:
            with open(crt, "rb") as f:
                fp = fingerprint(ssl.PEM_cert_to_DER_cert(f.read().decode()))
        else:
            from edgekd.link.certs import make_self_signed
            fp = make_self_signed(crt, key)
        servers = {}
        for tls_on in (False, True):
            ctx = server_context(crt, key) if tls_on else None
            srv = SoftLabelServer(LinearTeacher(), data, "127.0.0.1", 0, TOKEN, max_devices=4, tls=ctx)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            servers[tls_on] = srv
        rows = []
        for name, tls in client_variants(fp):
            srv = servers[tls is not None]
            hs, cipher = handshake_ms(srv.address, tls, a.connects)
            wall, payload, wire = stream(srv.address, tls, a.epochs, a.repeats)
            rows.append({"link": name, "cipher": cipher, "handshake_ms": round(hs, 3),
                         "stream_s": round(wall, 3), "payload_bytes": payload, "wire_bytes": wire,
                         "wire_overhead": round(wire / payload - 1, 4),
                         "payload_MBps": round(payload / wall / 1e6, 2)})
        for srv in servers.values():
            srv.shutdown()
    base = rows[0]
    for r in rows:
        r["handshake_x"] = round(r["handshake_ms"] / base["handshake_ms"], 2)
        r["stream_x"] = round(r["stream_s"] / base["stream_s"], 3)
    if a.json:
        print(json.dumps({"epochs": a.epochs, "connects": a.connects, "rows": rows}))
        return
    print(f"digits, naive f32 streaming (no training), {a.epochs} epochs, median of "
          f"{a.repeats}; handshake median of {a.connects}")
    print(f"{'link':<27} {'cipher':<30} {'handshake':>10} {'x':>5} {'stream':>8} {'x':>6} "
          f"{'payload B':>10} {'socket B':>10} {'+TLS':>6} {'MB/s':>6}")
    for r in rows:
        print(f"{r['link']:<27} {r['cipher']:<30} {r['handshake_ms']:>8.2f}ms {r['handshake_x']:>5} "
              f"{r['stream_s']:>7.2f}s {r['stream_x']:>6} {r['payload_bytes']:>10,} "
              f"{r['wire_bytes']:>10,} {r['wire_overhead']:>6.1%} {r['payload_MBps']:>6}")


if __name__ == "__main__":
    sys.exit(main())
