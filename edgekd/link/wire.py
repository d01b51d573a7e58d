"""Byte sizes of the link's messages, from the frame layout of DESIGN.md.

A frame is a 10-byte header (magic "EK", version, type, flags, reserved, u32 length), the
payload, and a u32 crc32. Payload layouts (little-endian) for the f32 codecs:
  EPOCH  (device->host) u32 epoch, u32 cursor
  BATCH  (host->device) u32 epoch, u32 cursor, u32 count, then per sample u32 id and u16 label,
         then x (count * features values), then soft labels (count * classes values)
  ACK    (device->host) u32 epoch, u32 cursor
  HALT   (device->host) u32 epoch, u32 cursor, u32 count, count * u32 id   (ACK + settled ids)
  WAKE   (device->host) u32 count, count * u32 id
  STOP   (device->host) UTF-8 reason
The in-process link charges exactly these sizes, so its byte counts are the ones a socket
carrying these frames would show.
"""

FRAME_OVERHEAD = 10 + 4
F32 = 4


def batch_bytes(count, features, classes, x_bytes=F32, soft_bytes=F32):
    return FRAME_OVERHEAD + 12 + count * (4 + 2) + count * (features * x_bytes + classes * soft_bytes)


def epoch_bytes():
    return FRAME_OVERHEAD + 8


def ack_bytes(halted=0):
    return FRAME_OVERHEAD + (12 + 4 * halted if halted else 8)


def wake_bytes(count):
    return FRAME_OVERHEAD + 4 + 4 * count


def stop_bytes(reason):
    return FRAME_OVERHEAD + len(reason.encode())


def naive_bytes(epochs, num_train, batch, features, classes):
    """What streaming every sample every epoch in f32 costs, with per-batch ACKs and no HALTs."""
    full, rest = divmod(num_train, batch)
    per_epoch = epoch_bytes() + full * (batch_bytes(batch, features, classes) + ack_bytes())
    if rest:
        per_epoch += batch_bytes(rest, features, classes) + ack_bytes()
    return epochs * per_epoch
