"""Throwaway TLS material for broker tests: a CA, a server certificate for 127.0.0.1/localhost, a client one.

Made with the `openssl` CLI when it is on PATH, else with the `cryptography` package; `tls_backend()` says
which, or None (the TLS tests then skip with that reason). EC P-256 keys: generated in milliseconds.
Everything is valid for two days and lives in the test's tmp_path only.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

NO_TLS_TOOL = "neither the openssl CLI nor the cryptography package is available to make test certificates"


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def tls_backend() -> str | None:
    if shutil.which("openssl"):
        return "openssl"
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return None
    return "cryptography"


def make_ca(directory: Path, name: str = "ca", backend: str | None = None) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    backend = backend or tls_backend()
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    if backend == "openssl":
        _openssl("req", "-x509", *_EC_KEY, "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                 "-subj", f"/CN=emotion-edge test {name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    elif backend == "cryptography":
        _crypto_issue(cert, key, f"emotion-edge test {name}", issuer=None, server=False)
    else:
        raise RuntimeError(NO_TLS_TOOL)
    return cert, key


def make_signed(
    directory: Path, name: str, ca: tuple[Path, Path], server: bool, backend: str | None = None
) -> tuple[Path, Path]:
    """A leaf certificate signed by `ca`: a server one (SAN 127.0.0.1 + localhost) or a client one."""
    backend = backend or tls_backend()
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    common_name = "localhost" if server else f"emotion-edge-{name}"
    if backend == "openssl":
        csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        san = "subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else ""
        ext.write_text(
            f"{san}basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        _openssl(
            "req", "-new", *_EC_KEY, "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={common_name}"
        )
        _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
                 "-out", cert, "-days", "2", "-extfile", ext)  # fmt: skip
    elif backend == "cryptography":
        _crypto_issue(cert, key, common_name, issuer=ca, server=server)
    else:
        raise RuntimeError(NO_TLS_TOOL)
    return cert, key


def make_tls_files(directory: Path, backend: str | None = None) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory, "ca", backend)
    server = make_signed(directory, "server", ca, server=True, backend=backend)
    client = make_signed(directory, "client", ca, server=False, backend=backend)
    return TlsFiles(*ca, *server, *client)


# --- openssl CLI ---------------------------------------------------------------------------------------------

_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _openssl(*args) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


# --- cryptography package ------------------------------------------------------------------------------------


def _crypto_issue(cert_path: Path, key_path: Path, common_name: str, issuer, server: bool) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    if issuer is None:  # self-signed CA
        issuer_name, signing_key, issuer_public = subject, key, key.public_key()
    else:
        issuer_cert = x509.load_pem_x509_certificate(Path(issuer[0]).read_bytes())
        signing_key = serialization.load_pem_private_key(Path(issuer[1]).read_bytes(), password=None)
        issuer_name, issuer_public = issuer_cert.subject, issuer_cert.public_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    is_ca = issuer is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),  # fmt: skip
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
    )
    if not is_ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(signing_key, hashes.SHA256())
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
