"""A board survives any frame: 0- and 1-byte payloads, every request with a short body,
NaN and infinite inputs or teacher logits, a temperature that overflows the loss, learning
rates out of range, hostile EKB fields (shifts and zero points no TFLM model has, layer sizes
whose product wraps 32 bits), a model that fails its hash. Each gets a NAK or an error reply,
the weights and the working model stay as they were, and the board keeps answering. The host
C firmware runs built with -fsanitize=address,undefined, so undefined behaviour on any of these
paths fails the test; the emulator and the Cortex-M4F in QEMU get the same frames."""

import hashlib
import struct
import time
import zlib

import numpy as np
import pytest

from boardutil import board_models, board_params, boards  # noqa: F401

HOSTILE_KINDS = board_params("host-c", "emulator", "qemu-m4f")


@pytest.fixture
def board(request, boards):
    kind = request.param
    if kind == "host-c":  # built once per session, with the sanitizers
        env = {"ASAN_OPTIONS": "abort_on_error=1:detect_leaks=0",
               "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1", "PATH": "/usr/bin:/bin"}
        b = boards.start(kind, sanitize=True, env=env)
    else:
        b = boards.start(kind)
    b.kind = kind
    yield b
    alive = b.proc.poll() is None
    log = b.stderr()
    b.close()
    assert alive, f"the board process died: {log[-2000:]}"
    assert "runtime error" not in log and "AddressSanitizer" not in log, log[-2000:]


def raw_deploy(client, blob, fmt, sha=None):
    """DEPLOY_BEGIN / CHUNKs / END of exactly these bytes, no host-side checks."""
    from firmware_bridge import messages as m
    sha = sha or hashlib.sha256(blob).digest()
    client.request(m.DEPLOY_BEGIN, m.DEPLOY_BEGIN_S.pack(len(blob), fmt, sha))
    step = 1024
    for off in range(0, len(blob), step):
        data = blob[off:off + step]
        client.request(m.DEPLOY_CHUNK, m.CHUNK_HEAD.pack(off, zlib.crc32(data)) + data)
    return client.request(m.DEPLOY_END, timeout=5)


def hostile_ekb_blobs(blob):
    """(what, bytes) pairs: the deployed EKB model with one field made hostile."""
    from firmware_bridge import ekb
    widths, _, _ = ekb.describe(blob)
    first_out = widths[0][1]
    layer0 = ekb.HEADER.size
    body0 = layer0 + ekb.LAYER.size
    shift0 = body0 + 4 * first_out

    def patch(off, fmt, *values):
        b = bytearray(blob)
        struct.pack_into(fmt, b, off, *(values * (len(fmt) - 1) if len(values) == 1 else values))
        return bytes(b)

    return [
        ("shift INT32_MIN", patch(shift0, "<i", -2 ** 31)),
        ("shift -40", patch(shift0, "<i", -40)),
        ("shift 31", patch(shift0, "<i", 31)),
        ("multiplier < 0", patch(body0, "<i", -5)),
        ("input zero point INT32_MAX", patch(layer0 + 8, "<i", 2 ** 31 - 1)),
        ("output zero point INT32_MIN", patch(layer0 + 12, "<i", -2 ** 31)),
        ("model zero point INT32_MAX", patch(12, "<i", 2 ** 31 - 1)),
        ("input scale NaN", patch(8, "<f", float("nan"))),
        ("layer scale inf", patch(layer0 + 24, "<f", float("inf"))),
        ("in x out wraps 32 bits", patch(layer0, "<HH", 65535)),
        ("activation range", patch(layer0 + 16, "<i", -1000)),
        ("zero layers", patch(4, "<B", 0)),
        ("255 layers", patch(4, "<B", 255)),
        ("truncated", blob[:len(blob) // 2]),
        ("trailing bytes", blob + b"\0" * 4),
    ]


@pytest.mark.parametrize("board", HOSTILE_KINDS, indirect=True)
def test_malformed_frames_and_requests_change_nothing(board, board_models):
    from firmware_bridge import commands
    from firmware_bridge import messages as m
    from firmware_bridge.framing import pack
    from firmware_bridge.protocol import BoardError
    ds = board_models["ds"]
    with commands.connect(board.port, timeout=3, retries=1) as client:
        commands.deploy(client, board_models["student"].read_bytes())
        b = commands.info(client)
        y0, raw0 = commands.infer(client, ds.x_test[:16])
        w0, b0 = commands.get_weights(client)

        for payload in (b"", b"\x07"):  # no room for a sequence number: NAK
            client.link.discard_input()
            client.link._write(pack(m.INFO, payload))
            event = client.link.recv(time.monotonic() + 3)
            assert event is not None and event[0] == m.BOARD_ERROR, event
            assert event[1][:3] == b"\xff\xff\x01"

        for rtype in list(range(m.INFO, m.BENCH + 1)) + [0x55, 0x7F, 0xA0]:
            for body in (b"\x01", b"\xff\xff"):
                if rtype == m.RESET and body == b"\x01":
                    continue  # a valid RESET 1 (erase): tested below
                try:
                    client.request(rtype, body)
                except BoardError as e:
                    assert e.code in (m.E_REFUSED, m.E_NO_MODEL, m.E_BUSY), (rtype, body, e)
        assert commands.info(client).model_sha256 == b.model_sha256

        dt_f32 = m.DT_F32
        x = np.tile(ds.x_test[:2].astype(np.float32), 1)
        for bad in (np.nan, np.inf, -np.inf):
            xb = x.copy()
            xb[1, 5] = bad
            with pytest.raises(BoardError, match="NaN or infinite") as e:
                client.request(m.INFER, m.pack_infer(dt_f32, xb))
            assert e.value.code == m.E_REFUSED

        xs, ys = ds.x_train[:4].astype(np.float32), ds.y_train[:4]
        t = np.zeros((4, 10), np.float32)
        cases = [("teacher NaN", 0.1, 4.0, 0.9, "NaN"), ("teacher inf", 0.1, 4.0, 0.9, "inf"),
                 ("lr NaN", float("nan"), 4.0, 0.9, None), ("lr inf", float("inf"), 4.0, 0.9, None),
                 ("lr 1e30", 1e30, 4.0, 0.9, None), ("lr < 0", -1.0, 4.0, 0.9, None),
                 ("T 0", 0.1, 0.0, 0.9, None), ("T 1e-38 overflows the loss", 0.1, 1e-38, 0.9, None),
                 ("alpha NaN", 0.1, 4.0, float("nan"), None), ("alpha 2", 0.1, 4.0, 2.0, None)]
        for what, lr, T, alpha, teacher_bad in cases:
            tb = t.copy()
            tb[0, 0] = {"NaN": np.nan, "inf": np.inf, None: 30.0}[teacher_bad]
            body = m.pack_train(m.TrainBatch(lr, T, alpha, dt_f32, ys.astype(np.uint16), xs, tb))
            with pytest.raises(BoardError) as e:
                client.request(m.TRAIN_LAST, body)
            assert e.value.code == m.E_REFUSED, what
        nan4 = np.full(4, np.nan, "<f4").tobytes()
        for body in (m.U32.pack(0) + nan4, m.U32.pack(2) + bytes(4), m.U32.pack(1 << 30) + bytes(4),
                     m.U32.pack(0) + bytes(3), m.U32.pack(0xFFFFFFFC) + bytes(8)):
            with pytest.raises(BoardError) as e:
                client.request(m.SET_WEIGHTS, body)
            assert e.value.code == m.E_REFUSED, body
        w1, b1 = commands.get_weights(client)
        np.testing.assert_array_equal(w1, w0)
        np.testing.assert_array_equal(b1, b0)
        assert not commands.info(client).trained
        y1, raw1 = commands.infer(client, ds.x_test[:16])
        np.testing.assert_array_equal(raw1, raw0)


@pytest.mark.parametrize("board", HOSTILE_KINDS, indirect=True)
def test_a_failed_deploy_keeps_the_working_model(board, board_models):
    from firmware_bridge import commands
    from firmware_bridge import ekb
    from firmware_bridge import messages as m
    from firmware_bridge.protocol import BoardError
    ds = board_models["ds"]
    data = board_models["student"].read_bytes()
    with commands.connect(board.port, timeout=3, retries=1) as client:
        dep = commands.deploy(client, data)
        b = commands.info(client)
        _, raw0 = commands.infer(client, ds.x_test[:16])
        blob = data if b.format == m.FORMAT_TFLITE else ekb.from_tflite(data)
        failures = [("wrong SHA-256", blob, b"\x01" * 32, m.E_HASH)]
        if b.format == m.FORMAT_EKB:
            failures += [(what, bad, None, m.E_REFUSED) for what, bad in hostile_ekb_blobs(blob)]
        else:
            failures += [("not a flatbuffer", b"TFL3" * 40, None, m.E_REFUSED)]
        for what, bad, sha, code in failures:
            with pytest.raises(BoardError) as e:
                raw_deploy(client, bytes(bad), b.format, sha)
            assert e.value.code in (code, m.E_NO_FIT), (what, e.value)
            now = commands.info(client)
            assert now.has_model and now.model_sha256.hex() == dep["sha256"], what
            _, raw = commands.infer(client, ds.x_test[:16])
            np.testing.assert_array_equal(raw, raw0, err_msg=what)
        with pytest.raises(BoardError):  # a deploy abandoned half-way, then END: refused
            client.request(m.DEPLOY_BEGIN, m.DEPLOY_BEGIN_S.pack(len(blob), b.format,
                                                                 hashlib.sha256(blob).digest()))
            client.request(m.DEPLOY_END)
        assert commands.info(client).model_sha256.hex() == dep["sha256"]
        commands.reset(client, erase=True)
        assert not commands.info(client).has_model
