"""The preview's token: where it comes from, when it is required, and the constant-time check.

A loopback bind (the default) needs no token: only users of this machine reach it, and from elsewhere
through an SSH tunnel. Any other bind puts faces on the network, so it needs a token, read from
`preview.token_file` or systemd's `$CREDENTIALS_DIRECTORY/preview_token` (LoadCredential=), never from argv
(visible in `ps`) or the config file. A token, once configured, is required on every bind.

Browsers send it as HTTP Basic auth (any user name, the token as password: the browser asks once and
reuses it for the stream and the status requests); scripts may send `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from pathlib import Path

from edge.config import ConfigError
from edge.files import path_problem, read_secret
from edge.preview.address import is_loopback

CREDENTIAL_NAME = "preview_token"
MIN_TOKEN_CHARS = 12  # with no TLS and no lockout, a short password is a guessable one


def _read_token(path: Path, what: str) -> str | None:
    # An empty file (install.sh creates one for LoadCredential=) means no token.
    return (read_secret(path, "preview.token_file", what, ConfigError) or "").strip() or None


def load_token(cfg, environ: dict[str, str] | None = None) -> str | None:
    """The configured token, or None. Raises ConfigError when the settings cannot be served safely."""
    environ = os.environ if environ is None else environ
    if cfg.token_file:
        path = Path(cfg.token_file)
        problem = path_problem(path)
        if problem:
            raise ConfigError(f"preview.token_file: file {problem}")
        token = _read_token(path, "token file")
        origin = f"preview.token_file ({path})"
    elif environ.get("CREDENTIALS_DIRECTORY"):
        path = Path(environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        token = _read_token(path, "credential")
        origin = f"the credential {path}"
    else:
        token, origin = None, ""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"preview.token_file: the token in {origin} has {len(token)} characters; use at least "
            f"{MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 16`)"
        )
    if token is None and not is_loopback(cfg.host):
        raise ConfigError(
            f"preview.host: {cfg.host} is not a loopback address, so the preview needs a token: set "
            "preview.token_file (or the systemd credential preview_token), or keep preview.host at 127.0.0.1 "
            "and reach the page through an SSH tunnel"
        )
    return token


def _presented(header: str) -> str | None:
    """The token an Authorization header carries (Basic: the password; Bearer: the token), else None."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def authorized(header: str | None, token: str | None) -> bool:
    """No token configured: everyone (loopback only). Otherwise the header must carry it exactly."""
    if token is None:
        return True
    presented = _presented(header) if header else None
    if presented is None:
        return False
    # compare_digest takes time independent of where the strings differ: no guessing it byte by byte.
    return hmac.compare_digest(presented.encode("utf-8"), token.encode("utf-8"))
