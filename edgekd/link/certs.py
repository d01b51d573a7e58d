"""`edgekd tls init`: a self-signed certificate and key for a host, made with the
`cryptography` package (a host-side extra; the device path never imports this module)."""

import datetime
import ipaddress
import os
import socket

from ..errors import EdgekdError
from ..fileio import atomic_path
from .tls import fingerprint


def default_names():
    """Names a device may dial the host by: localhost, the loopback addresses, this host."""
    names = ["localhost", "127.0.0.1", "::1"]
    host = socket.gethostname()
    if host and host not in names:
        names.append(host)
    return names


def make_self_signed(cert_path, key_path, names=None, days=825):
    """Write an ECDSA P-256 key (mode 0600) and a self-signed certificate for `names` (DNS
    names or IP addresses); return the certificate's SHA-256 fingerprint."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise EdgekdError("`edgekd tls init` needs the cryptography package: "
                          "pip install 'edgekd[tls]'") from None
    names = list(names or default_names())
    sans = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edgekd host {names[0]}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with atomic_path(key_path) as tmp:
        os.chmod(tmp, 0o600)
        with open(tmp, "wb") as f:
            f.write(key_pem)
    with atomic_path(cert_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def cert_fingerprint(cert_path):
    """SHA-256 fingerprint of a PEM certificate file (stdlib only)."""
    import ssl
    try:
        with open(cert_path, encoding="ascii", errors="replace") as f:
            pem = f.read()
        return fingerprint(ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN CERTIFICATE-----"):]))
    except FileNotFoundError:
        raise EdgekdError(f"{cert_path}: no such file") from None
    except ValueError:
        raise EdgekdError(f"{cert_path}: not a PEM certificate") from None
