"""Credentials and certificates of the secured mode: one place for how they are derived and written.

- A car's MQTT password is derived from the fleet secret (HMAC-SHA256 of the car id), so that a fleet of any size
  needs one secret, not a file of passwords, on the simulator's side; the broker's side is Mosquitto's password
  file, written here in its own format (`$7$`: PBKDF2-HMAC-SHA512, what `mosquitto_passwd` writes) fast enough
  for 100,000 cars in seconds (`mosquitto_passwd` runs one process per user: about 45 minutes for 100,000).
- The CA and server certificate are made with the `cryptography` package at set-up, never committed.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Mosquitto 2.0's `$7$` hashes: PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte key. Mosquitto checks a login with the
# iterations named in the line; 101 is what mosquitto_passwd writes. A car's password is 256 bits of HMAC output,
# so the hash's cost does not protect it: it is not guessable at any iteration count.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
CERT_DAYS = 825


def car_password(fleet_secret: str, car_id: str) -> str:
    """The MQTT password of `car_id`: what the car would have been provisioned with at the factory."""
    digest = hmac.new(fleet_secret.encode(), f"mqtt-password:{car_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_secret() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def mosquitto_password_line(user: str, password: str, salt: bytes | None = None) -> str:
    """One line of Mosquitto's password file, `user:$7$iterations$salt$hash`."""
    if ":" in user or "\n" in user:
        raise ValueError(f"an MQTT user name cannot contain ':' or a newline: {user!r}")
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"{user}:$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def write_private(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write a secret file readable by its owner only (created with that mode: never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    encoding, form = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, form, serialization.NoEncryption())


def make_certificates(folder: Path, hosts: list[str]) -> None:
    """A CA (ca.crt, ca.key) and a server certificate signed by it for `hosts` (server.crt, server.key, and
    server.pem holding key and certificate, the form Kafka's PEM key store reads)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "car-stream CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    server_pem = server_cert.public_bytes(serialization.Encoding.PEM)
    (folder / "ca.crt").write_bytes(ca_pem)
    (folder / "server.crt").write_bytes(server_pem)
    write_private(folder / "ca.key", _pem_key(ca_key))
    write_private(folder / "server.key", _pem_key(server_key))
    write_private(folder / "server.pem", _pem_key(server_key) + server_pem)


def client_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context that verifies the server against `ca_file` (the system's CAs when None), host name too."""
    return ssl.create_default_context(cafile=ca_file)
