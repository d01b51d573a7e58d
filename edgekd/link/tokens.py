"""Shared tokens: how strong one is, and a strong one when asked.

A token guessed offline in seconds protects nothing, so the host refuses one whose estimated
entropy is under 128 bits unless told `--weak-token`. The estimate is deliberately simple and
errs high for random strings, low for patterns: length × log2 of the size of the character
classes used (digits 10, lower 26, upper 26, other printable ASCII 33, anything else 128),
and no more than length × log2(distinct characters + 1) bits, so `aaaa…` scores near zero.
"""

import math
import secrets

from ..errors import EdgekdError

MIN_TOKEN_BITS = 128
TOKEN_BYTES = 32


def token_bits(token):
    if not token:
        return 0.0
    classes = 0
    if any(c.isascii() and c.isdigit() for c in token):
        classes += 10
    if any(c.isascii() and c.islower() for c in token):
        classes += 26
    if any(c.isascii() and c.isupper() for c in token):
        classes += 26
    if any(c.isascii() and not c.isalnum() for c in token):
        classes += 33
    if any(not c.isascii() for c in token):
        classes += 128
    distinct = len(set(token))
    return len(token) * min(math.log2(classes), math.log2(distinct + 1))


def check_token(token, weak_ok=False):
    """Refuse a token under MIN_TOKEN_BITS (unless weak_ok)."""
    bits = token_bits(token)
    if bits < MIN_TOKEN_BITS and not weak_ok:
        raise EdgekdError(f"the token has about {bits:.0f} bits of entropy, under the "
                          f"{MIN_TOKEN_BITS} required: use `edgekd tls token` for a strong one "
                          f"(or --weak-token on a trusted network)")
    return bits


def new_token():
    """256 random bits, URL-safe text (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)
