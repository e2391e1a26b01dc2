"""Telling the tenant login issuer about tenants (`tenant create` and `tenant delete`, as the
provisioner): the built-in broker needs nothing set up, OpenBao a connection and a role per
tenant. The issuing itself, which services do, is `services.core.silo.credentials`."""

from __future__ import annotations

import contextlib
import secrets
from typing import Protocol

import hvac
import structlog

from services.core.db import ServerAddress, at_server, one_connection, provisioner_url
from services.core.errors import ProvisioningError
from services.core.names import Names
from services.core.pgadmin import (
    MAINTENANCE_DATABASE,
    end_login,
    ident,
    literal,
    member_logins,
    role_exists,
)
from services.core.settings import Settings
from services.core.silo.credentials.logins import drop_logins
from services.core.silo.credentials.openbao import PLUGIN, OpenBao

log = structlog.get_logger(__name__)


class CredentialAdmin(Protocol):
    """The provisioning side: run by `tenant create` and `tenant delete`, as the provisioner."""

    async def register(self, slug: str, server: ServerAddress, database: str) -> None:
        """Make logins for this tenant issuable (idempotent)."""
        ...

    async def unregister(self, slug: str, server: ServerAddress, database: str) -> list[str]:
        """Revoke every login of this tenant and forget it; returns the logins that were
        dropped."""
        ...


class BuiltinAdmin:
    """Nothing to register (the provisioner issues logins directly); unregistering drops every
    login of the tenant, ending their sessions."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._names = Names(settings.namespace)

    async def register(self, slug: str, server: ServerAddress, database: str) -> None:
        """Nothing to set up: the built-in broker issues logins for any tenant the registry has."""
        return None

    async def unregister(self, slug: str, server: ServerAddress, database: str) -> list[str]:
        """Drop every login of the tenant, ending their sessions first."""
        admin = at_server(provisioner_url(self._settings), server, MAINTENANCE_DATABASE)
        dropped = []
        async with one_connection(admin, self._settings, autocommit=True) as conn:
            for group in (
                self._names.tenant_owner_role(slug),
                self._names.tenant_reader_role(slug),
            ):
                dropped += await drop_logins(conn, self._names, group, expired_only=False)
        return dropped


def role_statements(
    names: Names, slug: str, login_group: str | None, *, group: str | None = None
) -> dict[str, list[str]]:
    """What OpenBao runs to create, renew and revoke one tenant's logins (members of its owner
    role, or of `group`: its reader role). The broker role is made a member of each login so it
    may end the login's sessions when it revokes it."""
    owner = ident(group or names.tenant_owner_role(slug))
    broker = ident(names.tenant_broker_role(slug))
    groups = owner + (f", {ident(login_group)}" if login_group else "")
    return {
        "creation_statements": [
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
            f"VALID UNTIL '{{{{expiration}}}}' IN ROLE {groups} ROLE {broker};"
        ],
        "renew_statements": ["ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';"],
        # Each statement must succeed on a login already dropped (by hand, or by a tenant
        # delete that got there first), or the lease can never be revoked.
        "revocation_statements": [
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
            'DROP ROLE IF EXISTS "{{name}}";',
        ],
    }


class OpenBaoAdmin:
    """Registers tenants in OpenBao (as the provisioner) and revokes everything of theirs."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._names = Names(settings.namespace)
        self._mount = settings.openbao_mount

    async def register(self, slug: str, server: ServerAddress, database: str) -> None:
        """Give OpenBao the tenant's connection and role, and rotate its root credential."""
        names, settings = self._names, self._settings
        broker = names.tenant_broker_role(slug)
        password = secrets.token_urlsafe(32)
        # The broker role gets a fresh password each time (OpenBao rotates it away at once):
        # running create again repairs a tenant whose OpenBao side was lost.
        admin = at_server(provisioner_url(settings), server, MAINTENANCE_DATABASE)
        async with one_connection(admin, settings, autocommit=True) as conn:
            verb = "alter" if await role_exists(conn, broker) else "create"
            await conn.exec_driver_sql(
                f"{verb} role {ident(broker)} login createrole password {literal(password)}"
            )
            await conn.exec_driver_sql(
                f"grant connect on database {ident(database)} to {ident(broker)}"
            )
        name = names.openbao_name(slug)
        connection_url = (
            "postgresql://{{username}}:{{password}}@"
            f"{server.host}:{server.port}/{database}?sslmode=prefer"
        )
        template = f'{{{{ printf "{names.login_prefix}%s" (random 16) | lowercase }}}}'
        statements = role_statements(names, slug, settings.credential_login_group)
        reader_name = names.openbao_reader_name(slug)
        reader_statements = role_statements(
            names, slug, settings.credential_login_group, group=names.tenant_reader_role(slug)
        )

        def configure(c: hvac.Client) -> None:
            c.secrets.database.configure(
                name=name,
                plugin_name=PLUGIN,
                connection_url=connection_url,
                username=broker,
                password=password,
                allowed_roles=[name, reader_name],
                username_template=template,
                verify_connection=True,
                mount_point=self._mount,
            )
            # The writer's role and the reader's, on the same connection and lease times.
            for role, role_sql in ((name, statements), (reader_name, reader_statements)):
                c.secrets.database.create_role(
                    name=role,
                    db_name=name,
                    default_ttl=int(settings.credential_ttl_s),
                    max_ttl=int(settings.credential_max_ttl_s),
                    mount_point=self._mount,
                    **role_sql,
                )
            c.secrets.database.rotate_root_credentials(name=name, mount_point=self._mount)

        bao = OpenBao(settings)
        try:
            await bao.call(configure)
        except hvac.exceptions.VaultError as exc:
            raise ProvisioningError(
                slug, f"OpenBao refused the tenant's connection: {exc}"
            ) from exc
        finally:
            bao.close()
        log.info("credentials.registered", tenant=slug, broker="openbao", connection=name)

    async def unregister(self, slug: str, server: ServerAddress, database: str) -> list[str]:
        """Revoke every lease of the tenant and remove its role and connection."""
        names, settings = self._names, self._settings
        name = names.openbao_name(slug)
        owner = names.tenant_owner_role(slug)
        admin = at_server(provisioner_url(settings), server, MAINTENANCE_DATABASE)
        async with one_connection(admin, settings, autocommit=True) as conn:
            held = await member_logins(conn, owner, names.login_prefix)

        reader_name = names.openbao_reader_name(slug)

        def revoke(c: hvac.Client) -> None:
            # The trailing '/': the prefix of `<ns>-acme` must not reach `<ns>-acme-eu`'s leases.
            for role in (name, reader_name):
                c.sys.revoke_prefix(prefix=f"{self._mount}/creds/{role}/")
                with contextlib.suppress(hvac.exceptions.InvalidPath):
                    c.secrets.database.delete_role(name=role, mount_point=self._mount)
            c.secrets.database.delete_connection(name=name, mount_point=self._mount)

        bao = OpenBao(settings)
        try:
            await bao.call(revoke)
        except hvac.exceptions.InvalidPath:
            pass  # never registered, or already removed
        finally:
            bao.close()
        async with one_connection(admin, settings, autocommit=True) as conn:
            # Whatever OpenBao could not revoke (a lease it lost) goes the same way.
            await drop_logins(conn, names, owner, expired_only=False)
            await drop_logins(conn, names, names.tenant_reader_role(slug), expired_only=False)
            broker = names.tenant_broker_role(slug)
            if await role_exists(conn, broker):
                await conn.exec_driver_sql(
                    f"revoke all on database {ident(database)} from {ident(broker)}"
                )
                await end_login(conn, broker)
        log.info("credentials.unregistered", tenant=slug, broker="openbao", revoked=held)
        return held


def credential_admin(settings: Settings) -> CredentialAdmin:
    """The issuer the settings name, its provisioning side (tenant create and delete)."""
    if settings.credentials == "openbao":
        return OpenBaoAdmin(settings)
    return BuiltinAdmin(settings)
