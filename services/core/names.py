"""Every name siloflow creates in PostgreSQL (and, later, RabbitMQ), derived from the namespace so
two deployments can share one server without seeing each other. Nothing spells these inline."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.core.errors import InvalidArgument

# Slugs name a tenant in queues, databases and roles; lower-case so that case never makes two
# tenants look alike, and short enough that `<namespace>_tenant_<slug>` fits PostgreSQL's 63 bytes.
SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,38}$")

# The one tenant of single-tenant mode (`SILOFLOW_MULTITENANT=false`).
DEFAULT_TENANT = "default"
# The placement that points at the registry's own server; created by `migrate`.
DEFAULT_PLACEMENT = "default"

# Alembic chains and their version tables: one table per partition so the chains never collide,
# even in single-tenant mode where all three live in one database.
CHAINS = ("registry", "shared", "tenant")
VERSION_TABLES = {
    "registry": "registry_alembic_version",
    "shared": "shared_alembic_version",
    "tenant": "alembic_version",
}
# Table-name prefix of each partition; the tenant partition is the unprefixed rest.
PARTITION_PREFIXES = {"registry": "registry_", "shared": "shared_", "tenant": ""}


def validate_slug(slug: str) -> str:
    """Return the slug if it is acceptable, else raise `InvalidArgument` saying why."""
    if not SLUG_RE.match(slug):
        raise InvalidArgument(
            f"invalid tenant slug {slug!r}: use 2-39 characters of lower-case letters, digits "
            "and '-', starting with a letter (e.g. 'acme' or 'acme-eu')"
        )
    if slug.endswith("-") or "--" in slug:
        raise InvalidArgument(
            f"invalid tenant slug {slug!r}: no trailing or doubled '-' (it reads badly in "
            "queue and database names)"
        )
    return slug


def partition_of(table: str) -> str:
    """The partition a table name belongs to, by its prefix."""
    for chain in ("registry", "shared"):
        if table.startswith(PARTITION_PREFIXES[chain]):
            return chain
    return "tenant"


@dataclass(frozen=True)
class Names:
    """The names of one deployment, all derived from its namespace."""

    namespace: str

    # -- PostgreSQL ------------------------------------------------------------------------------

    @property
    def provisioner_role(self) -> str:
        """The least-privilege role (CREATEDB CREATEROLE, never superuser) that provisions."""
        return f"{self.namespace}_provisioner"

    @property
    def shared_database(self) -> str:
        """The database of the `shared_*` reference data in multi-tenant mode."""
        return f"{self.namespace}_shared"

    def tenant_database(self, slug: str) -> str:
        """A tenant's silo; '-' becomes '_' (slugs have no '_', so this is one-to-one)."""
        return f"{self.namespace}_tenant_{slug.replace('-', '_')}"

    def tenant_owner_role(self, slug: str) -> str:
        """The NOLOGIN role that owns a tenant's database and every object in it."""
        return f"{self.namespace}_owner_{slug.replace('-', '_')}"

    @property
    def role_prefix(self) -> str:
        """Every role and database of this deployment starts with this (used by clean-ups)."""
        return f"{self.namespace}_"
