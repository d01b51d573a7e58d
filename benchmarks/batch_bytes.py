"""Bytes per streamed sample on the link, by soft-label codec and BATCH compression: top-k
with k = 1..4 and float16, each with and without zlib, on the halting benchmark's sets.

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


def per_sample(data, logits, soft, k, n, batch=32):
    xc = x_codec("u8", int(np.prod(data.input_shape)), affine8_params(data.x_train))
    sc = soft_codec(soft, logits.shape[1], k or 4)
    raw = deflated = 0
    for i in range(0, n, batch):
        ids = np.arange(i, min(i + batch, n))
        payload = m.pack_batch(0, 1, m.SPLIT_TRAIN, ids, data.y_train[ids],
                               xc.encode(data.x_train[ids]), sc.encode(logits[ids]))
        raw += len(m.frame(m.T.BATCH, payload))
        deflated += len(m.frame(m.T.BATCH, zlib.compress(payload, m.ZLIB_LEVEL), m.FLAG_ZLIB))
    return raw / n, deflated / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=3200)
    ap.add_argument("--sets", default="digits,sensor,fashion-mnist")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in a.sets.split(","):
            data = load(name, 3000)
            n = min(a.samples, len(data.y_train))
            logits = teacher_for(name, data, workdir).logits(data.x_train[:n])
            for soft, k in SOFT:
                raw, deflated = per_sample(data, logits, soft, k, n)
                rows.append({"set": name, "soft": f"{soft}{k or ''}", "bytes_per_sample": raw,
                             "zlib_bytes_per_sample": deflated, "zlib_ratio": deflated / raw})
    if a.json:
        print(json.dumps({"rows": rows}))
        return
    print(f"{'set':14} {'soft labels':>11} {'B/sample':>9} {'zlib B/sample':>14} {'ratio':>6}")
    for r in rows:
        print(f"{r['set']:14} {r['soft']:>11} {r['bytes_per_sample']:>9.1f} "
              f"{r['zlib_bytes_per_sample']:>14.1f} {r['zlib_ratio']:>6.2f}")
    print("(u8 inputs; per sample of a full BATCH frame of 32, headers included)")


if __name__ == "__main__":
    main()
