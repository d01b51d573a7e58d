"""Bytes per streamed sample on the link, by soft-label codec and BATCH compression: top-k
with k = 1..4 and float16, each with and without zlib (and zstandard at its default level,
when the `zstandard` package is installed: the column is skipped otherwise), on the halting
benchmark's sets.

    python benchmarks/batch_bytes.py [--samples 3200] [--json]

Batches are built exactly as the host builds them (messages.pack_batch, then the frame),
from the same teachers as benchmarks/link_bytes.py; u8 inputs throughout. Accuracy does not
depend on zlib (the weights are bit-identical, the tests check it); top-k's k does, and
link_bytes.py measures the default k.
"""

import argparse
import json
import tempfile
import zlib

import numpy as np

from edgekd.link import messages as m
from edgekd.link.codecs import affine8_params, soft_codec, x_codec
from link_bytes import load, teacher_for

SOFT = (("topk", 4), ("topk", 3), ("topk", 2), ("topk", 1), ("f16", 0))


def zstd_compressor():
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard.ZstdCompressor()


def per_sample(data, logits, soft, k, n, batch=32, zstd=None):
    """(raw, zlib, zstd or None) bytes per sample of full BATCH frames; the zstd figure is the
    zlib frame with its payload compressed by zstd instead (same header and CRC)."""
    xc = x_codec("u8", int(np.prod(data.input_shape)), affine8_params(data.x_train))
    sc = soft_codec(soft, logits.shape[1], k or 4)
    raw = deflated = zstd_bytes = 0
    for i in range(0, n, batch):
        ids = np.arange(i, min(i + batch, n))
        payload = m.pack_batch(0, 1, m.SPLIT_TRAIN, ids, data.y_train[ids],
                               xc.encode(data.x_train[ids]), sc.encode(logits[ids]))
        raw += len(m.frame(m.T.BATCH, payload))
        deflated += len(m.frame(m.T.BATCH, zlib.compress(payload, m.ZLIB_LEVEL), m.FLAG_ZLIB))
        if zstd is not None:
            zstd_bytes += len(m.frame(m.T.BATCH, zstd.compress(payload), m.FLAG_ZLIB))
    return raw / n, deflated / n, (zstd_bytes / n if zstd is not None else None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=3200)
    ap.add_argument("--sets", default="digits,sensor,fashion-mnist")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rows = []
    zstd = zstd_compressor()
    with tempfile.TemporaryDirectory() as workdir:
        for name in a.sets.split(","):
            data = load(name, 3000)
            n = min(a.samples, len(data.y_train))
            logits = teacher_for(name, data, workdir).logits(data.x_train[:n])
            for soft, k in SOFT:
                raw, deflated, packed = per_sample(data, logits, soft, k, n, zstd=zstd)
                rows.append({"set": name, "soft": f"{soft}{k or ''}", "bytes_per_sample": raw,
                             "zlib_bytes_per_sample": deflated, "zlib_ratio": deflated / raw,
                             "zstd_bytes_per_sample": packed})
    if a.json:
        print(json.dumps({"rows": rows}))
        return
    head = f"{'set':14} {'soft labels':>11} {'B/sample':>9} {'zlib B/sample':>14} {'ratio':>6}"
    print(head + (f" {'zstd B/sample':>14}" if zstd else ""))
    for r in rows:
        line = (f"{r['set']:14} {r['soft']:>11} {r['bytes_per_sample']:>9.1f} "
                f"{r['zlib_bytes_per_sample']:>14.1f} {r['zlib_ratio']:>6.2f}")
        print(line + (f" {r['zstd_bytes_per_sample']:>14.1f}" if zstd else ""))
    print("(u8 inputs; per sample of a full BATCH frame of 32, headers included"
          + ("" if zstd else "; zstd skipped: pip install zstandard") + ")")


if __name__ == "__main__":
    main()
