"""Which issuer gives a process its tenant logins: the built-in broker or OpenBao, as the settings
say. The one module that knows both (each builds on `seam`, and neither on the other)."""

from __future__ import annotations

from services.core.settings import Settings
from services.core.silo.credentials.builtin import BuiltinCredentials
from services.core.silo.credentials.openbao import OpenBaoCredentials
from services.core.silo.credentials.seam import CredentialSource


def credential_source(settings: Settings, *, reader: bool = False) -> CredentialSource:
    """The issuer the settings name (of read-only logins, with `reader`)."""
    if settings.credentials == "openbao":
        return OpenBaoCredentials(settings, reader=reader)
    return BuiltinCredentials(settings, reader=reader)
