"""`edgekd tls`: the host's TLS identity and a strong shared token."""

import os

import click

from ..errors import EdgekdError
from .base import emit, json_option, main


@main.group()
def tls():
    """TLS for a host that is not on loopback: make its certificate, print fingerprints and
    tokens. The host runs `serve --tls-cert C --tls-key K --token T`; a device pins it with
    `train --connect ... --tls-fingerprint F` (or `--tls-ca C`) and gives the same token."""


@tls.command("init")
@click.option("--cert", "cert_path", default="edgekd-host.crt", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the certificate (PEM).")
@click.option("--key", "key_path", default="edgekd-host.key", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the private key (PEM, mode 0600).")
@click.option("--name", "names", multiple=True, metavar="NAME",
              help="DNS name or IP address devices dial the host by (repeatable) "
                   "[localhost, 127.0.0.1, ::1 and this host's name].")
@click.option("--days", default=825, show_default=True, type=click.IntRange(1, 36500),
              help="Validity of the certificate.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@json_option
def tls_init(cert_path, key_path, names, days, force, as_json):
    """Make a self-signed certificate and key (ECDSA P-256) and print the certificate's
    SHA-256 fingerprint, which devices pin with --tls-fingerprint."""
    from ..link.certs import make_self_signed
    for p in (cert_path, key_path):
        if os.path.exists(p) and not force:
            raise EdgekdError(f"{p} exists (give --force to replace it)")
    fp = make_self_signed(cert_path, key_path, names or None, days)
    emit({"cert": cert_path, "key": key_path, "sha256": fp}, as_json,
         lambda r: f"wrote {r['cert']} and {r['key']}\nSHA-256 fingerprint {r['sha256']}")


@tls.command("fingerprint")
@click.argument("cert_path", type=click.Path(dir_okay=False))
@json_option
def tls_fingerprint(cert_path, as_json):
    """Print a PEM certificate's SHA-256 fingerprint."""
    from ..link.certs import cert_fingerprint
    fp = cert_fingerprint(cert_path)
    emit({"cert": cert_path, "sha256": fp}, as_json, lambda r: r["sha256"])


@tls.command("token")
@json_option
def tls_token(as_json):
    """Print a fresh random token (256 random bits) for --token / EDGEKD_TOKEN. --json also
    gives the host's entropy estimate for it (what the 128-bit check uses)."""
    from ..link.tokens import TOKEN_BYTES, new_token, token_bits
    t = new_token()
    emit({"token": t, "random_bits": 8 * TOKEN_BYTES, "estimated_bits": round(token_bits(t))},
         as_json, lambda r: r["token"])
