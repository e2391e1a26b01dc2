"""Host keys and report signatures. A host's key is derived from a server secret and its id
(HMAC-SHA256), so verifying a report needs no database round trip; the secret's version travels
with every signature, so a new secret can sign new hosts' keys while old ones still verify.

Signature header: `signature: v<version>:<base64 of HMAC-SHA256(host_key, message_id "\\n"
host_id "\\n" body)>`, with message_id and host_id in their canonical lower-case text form and the
body as the exact bytes published. docs/protocol.md has a worked example."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from services.core.errors import SettingsError
from services.core.secretfile import write_secret_file
from services.core.settings import Settings

SECRET_BYTES = 32
# `v<version>:<base64>`: ASCII digits only (Python's isdigit() takes '²' and '٣'), a version of at
# most nine of them, and no more base64 than a MAC (and its padding) can need.
SIGNATURE_RE = re.compile(r"v(?P<version>[0-9]{1,9}):(?P<mac>[A-Za-z0-9+/=]{1,88})", re.ASCII)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def signing_input(message_id: str, host_id: str, body: bytes) -> bytes:
    """The bytes a report's signature covers."""
    return message_id.encode() + b"\n" + host_id.encode() + b"\n" + body


def sign(host_key: bytes, version: int, message_id: str, host_id: str, body: bytes) -> str:
    """The `signature` header value for a report."""
    mac = hmac.new(host_key, signing_input(message_id, host_id, body), hashlib.sha256).digest()
    return f"v{version}:{_b64(mac)}"


# Host keys derived, kept: deriving one is an HMAC per report. Bounded (a key and a UUID take
# about 200 bytes), started afresh when full.
HOST_KEY_CACHE_MAX = 20_000


@dataclass(frozen=True)
class Keyring:
    """The server secrets by version; the highest version keys newly registered hosts."""

    secrets: dict[int, bytes]
    _derived: dict[tuple[uuid.UUID, int], bytes] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if not self.secrets:
            raise SettingsError("the host key secrets are empty: at least one version is needed")

    @property
    def current(self) -> int:
        """The version that keys newly registered hosts (the highest)."""
        return max(self.secrets)

    def host_key(self, host_id: uuid.UUID, version: int | None = None) -> bytes:
        """The key of a host under a secret version (the current one by default)."""
        version = self.current if version is None else version
        key = self._derived.get((host_id, version))
        if key is None:
            key = hmac.new(self.secrets[version], str(host_id).encode(), hashlib.sha256).digest()
            if len(self._derived) >= HOST_KEY_CACHE_MAX:
                self._derived.clear()
            self._derived[(host_id, version)] = key
        return key

    def verify(
        self, signature: object, message_id: str, host_id: uuid.UUID, body: bytes
    ) -> str | None:
        """None if the signature is right (checked in constant time), else what is wrong.
        `signature` is the header as it arrived: any AMQP value at all (text, bytes, a number,
        a table, nothing), so whatever an agent sends is an answer here, never an exception."""
        if signature is None or signature in ("", b""):
            return "no signature header"
        if isinstance(signature, bytes | bytearray):
            try:
                signature = bytes(signature).decode("ascii")
            except UnicodeDecodeError:
                return "signature is not v<version>:<base64>"
        if not isinstance(signature, str):
            return f"signature header is a {type(signature).__name__}, not text"
        parsed = SIGNATURE_RE.fullmatch(signature)
        if parsed is None:
            return "signature is not v<version>:<base64>"
        version = int(parsed["version"])
        if version not in self.secrets:
            return f"signature key version {version} is unknown (retired or never issued)"
        try:
            given = base64.b64decode(parsed["mac"], validate=True)
        except ValueError:
            return "signature is not valid base64"
        expected = hmac.new(
            self.host_key(host_id, version),
            signing_input(message_id, str(host_id), body),
            hashlib.sha256,
        ).digest()
        if not hmac.compare_digest(given, expected):
            return "signature does not match the host's key"
        return None

    # -- storage ---------------------------------------------------------------------------------

    def dumps(self) -> str:
        """The key file's text."""
        return (
            json.dumps(
                {"versions": {str(v): _b64(s) for v, s in sorted(self.secrets.items())}}, indent=2
            )
            + "\n"
        )

    @classmethod
    def loads(cls, text: str, *, source: str) -> Keyring:
        """Read a key file's text (`source` names it in errors)."""
        try:
            document = json.loads(text)
            return cls(
                {
                    int(v): base64.b64decode(s, validate=True)
                    for v, s in document["versions"].items()
                }
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SettingsError(f"{source}: not a siloflow host key file ({exc})") from None

    @classmethod
    def parse_setting(cls, text: str) -> Keyring:
        """`SILOFLOW_HOST_KEY_SECRETS`: `1:<base64>,2:<base64>`."""
        if not text.strip():
            raise SettingsError(
                "SILOFLOW_HOST_KEY_SECRETS is set but empty: unset it to use the key file "
                "`siloflow bootstrap` writes, or give <version>:<base64>[,...]"
            )
        try:
            pairs = (item.split(":", 1) for item in text.split(",") if item.strip())
            return cls({int(v): base64.b64decode(s, validate=True) for v, s in pairs})
        except ValueError:
            raise SettingsError(
                "SILOFLOW_HOST_KEY_SECRETS: expected <version>:<base64>[,<version>:<base64>...]"
            ) from None

    @classmethod
    def generate(cls) -> Keyring:
        """A keyring with one new secret, version 1."""
        return cls({1: secrets.token_bytes(SECRET_BYTES)})

    def rotated(self) -> Keyring:
        """A keyring with a new current version (older versions still verify)."""
        return Keyring({**self.secrets, self.current + 1: secrets.token_bytes(SECRET_BYTES)})


def write_keyring(path: Path, keyring: Keyring) -> None:
    """Write the key file readable by its owner only (created 0600, never world-readable)."""
    write_secret_file(path, keyring.dumps())


def load_keyring(settings: Settings) -> Keyring:
    """The keyring from `SILOFLOW_HOST_KEY_SECRETS`, else from the key file bootstrap wrote."""
    if settings.host_key_secrets is not None:
        return Keyring.parse_setting(settings.host_key_secrets.get_secret_value())
    path = settings.host_key_file
    if not path.is_file():
        raise SettingsError(
            f"no host key file at {path}: run `siloflow bootstrap` on this machine, copy the "
            "file here, or set SILOFLOW_HOST_KEY_SECRETS"
        )
    if path.stat().st_mode & 0o077:
        raise SettingsError(f"{path} is readable by others: chmod 600 it (it holds secrets)")
    return Keyring.loads(path.read_text(), source=str(path))


def ensure_keyring(settings: Settings) -> bool:
    """Bootstrap's part: generate the key file unless secrets are configured or it exists.
    Returns True when it was created."""
    if settings.host_key_secrets is not None or settings.host_key_file.is_file():
        return False
    write_keyring(settings.host_key_file, Keyring.generate())
    return True
