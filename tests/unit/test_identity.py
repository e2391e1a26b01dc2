"""Host keys, signatures, tokens and durations: the pure parts of host identity."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta

import pytest

from services.core.durations import parse_duration
from services.core.errors import InvalidArgument, SettingsError
from services.core.hostkeys import Keyring, sign
from services.core.registry import tokens

# The worked example of docs/protocol.md (checked there against `openssl dgst -hmac`).
EXAMPLE_KEY = bytes(range(1, 33))
EXAMPLE_MESSAGE_ID = "6f1c3b0e-2a6d-4c1e-9f3a-0d8b7c6e5a41"
EXAMPLE_HOST_ID = "0b6f7c1e-8d43-4c89-9d51-3f1c2a7b9e10"
EXAMPLE_BODY = (
    b'{"schema":"heartbeat/v1","host_id":"0b6f7c1e-8d43-4c89-9d51-3f1c2a7b9e10",'
    b'"sent_at":"2026-11-28T12:00:00Z","data":{"status":"ok","agent_version":"1.0.0",'
    b'"uptime_s":3600,"load_1":0.1,"load_5":0.2,"load_15":0.3}}'
)
EXAMPLE_SIGNATURE = "v1:fOISDkXfFw6fdZ+DEANCL1PLnA7K5fMy2OPBiiR84CU="


def test_the_documented_worked_example() -> None:
    assert sign(EXAMPLE_KEY, 1, EXAMPLE_MESSAGE_ID, EXAMPLE_HOST_ID, EXAMPLE_BODY) == (
        EXAMPLE_SIGNATURE
    )


KEYRING = Keyring({1: b"a" * 32})
HOST = uuid.uuid4()
MID = str(uuid.uuid4())
BODY = b'{"x": 1}'
GOOD = sign(KEYRING.host_key(HOST), 1, MID, str(HOST), BODY)


@pytest.mark.parametrize(
    ("signature", "message_id", "host", "body", "problem"),
    [
        (None, MID, HOST, BODY, "no signature"),
        ("", MID, HOST, BODY, "no signature"),
        ("garbage", MID, HOST, BODY, "not v<version>"),
        ("v1:!!!", MID, HOST, BODY, "base64"),
        ("v9:" + GOOD[3:], MID, HOST, BODY, "version 9 is unknown"),
        (GOOD, MID, HOST, BODY + b" ", "does not match"),  # the body changed
        (GOOD, str(uuid.uuid4()), HOST, BODY, "does not match"),  # replayed as another message
        (GOOD, MID, uuid.uuid4(), BODY, "does not match"),  # another host's report
    ],
)
def test_what_a_signature_must_bind(
    signature: str | None, message_id: str, host: uuid.UUID, body: bytes, problem: str
) -> None:
    result = KEYRING.verify(signature, message_id, host, body)
    assert result is not None and problem in result


def test_a_good_signature_verifies() -> None:
    assert KEYRING.verify(GOOD, MID, HOST, BODY) is None


def test_rotation_keeps_old_keys_verifying() -> None:
    rotated = KEYRING.rotated()
    assert rotated.current == 2
    assert rotated.verify(GOOD, MID, HOST, BODY) is None  # a v1 host, not re-enrolled
    new_host = uuid.uuid4()
    v2 = sign(rotated.host_key(new_host), 2, MID, str(new_host), BODY)
    assert rotated.verify(v2, MID, new_host, BODY) is None
    assert KEYRING.verify(v2, MID, new_host, BODY) is not None  # unknown before the rotation
    assert rotated.host_key(HOST, 1) != rotated.host_key(HOST, 2)


def test_host_keys_differ_per_host_and_secret() -> None:
    other = Keyring({1: b"b" * 32})
    assert KEYRING.host_key(HOST) != KEYRING.host_key(uuid.uuid4())
    assert KEYRING.host_key(HOST) != other.host_key(HOST)


def test_keyring_storage_round_trips_and_refuses_garbage() -> None:
    assert Keyring.loads(KEYRING.dumps(), source="x").secrets == KEYRING.secrets
    secret = base64.b64encode(b"c" * 32).decode()
    assert Keyring.parse_setting(f"1:{secret},3:{secret}").current == 3
    for bad in ("", "1", "x:abc", "1:not base64!"):
        with pytest.raises(SettingsError):
            Keyring.parse_setting(bad)
    with pytest.raises(SettingsError):
        Keyring.loads("{}", source="file")


def test_tokens_are_long_random_and_only_their_hash_is_kept() -> None:
    token = tokens.new_token()
    assert token.startswith(tokens.TOKEN_PREFIX)
    assert len(base64.urlsafe_b64decode(token[len(tokens.TOKEN_PREFIX) :] + "=")) == 32
    assert tokens.new_token() != token
    digest = tokens.hash_token(token)
    assert tokens.hash_token(digest.hex()) != digest


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(days=1)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("45", timedelta(seconds=45)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "-1h", "0", "1y", "ten minutes"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_duration(text)
