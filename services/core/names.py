"""Every name siloflow creates in PostgreSQL (and, later, RabbitMQ), derived from the namespace so
two deployments can share one server without seeing each other. Nothing spells these inline."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.core.errors import InvalidArgument
from services.core.outcomes import DeadLetterQueue

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
    if not SLUG_RE.fullmatch(slug):  # match() would let a trailing newline through
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
    def login_prefix(self) -> str:
        """Short-lived tenant logins (the built-in broker's and OpenBao's): `<ns>_login_<random>`.
        A login's tenant is the owner role it is a member of, not its name, so a name says
        nothing about whose it is."""
        return f"{self.namespace}_login_"

    def tenant_reader_role(self, slug: str) -> str:
        """The NOLOGIN role that may read a tenant's tables and nothing else (the API's logins
        are members of it)."""
        return f"{self.namespace}_reader_{slug.replace('-', '_')}"

    def openbao_reader_name(self, slug: str) -> str:
        """A tenant's read-only role in OpenBao ('.' is in no slug: it names no other tenant)."""
        return f"{self.namespace}-{slug}.read"

    def tenant_broker_role(self, slug: str) -> str:
        """The login OpenBao manages a tenant's logins with (its password rotated so that only
        OpenBao knows it)."""
        return f"{self.namespace}_bao_{slug.replace('-', '_')}"

    def openbao_name(self, slug: str) -> str:
        """A tenant's connection and role in OpenBao's database secrets engine."""
        return f"{self.namespace}-{slug}"

    @property
    def openbao_prefix(self) -> str:
        """The start of every OpenBao connection, role, policy and AppRole of this deployment."""
        return f"{self.namespace}-"

    @property
    def role_prefix(self) -> str:
        """Every role and database of this deployment starts with this (used by clean-ups)."""
        return f"{self.namespace}_"

    # -- RabbitMQ --------------------------------------------------------------------------------
    # Dots separate words so the console's Queues tab reads as a tree: `<ns>.intake`,
    # `<ns>.register`, `<ns>.tenant.<slug>`, `<ns>.dlq.<reason>`.

    @property
    def agents_exchange(self) -> str:
        """The topic exchange agents publish to (`report.<kind>`, later `register`)."""
        return f"{self.namespace}.agents"

    @property
    def unmatched_exchange(self) -> str:
        """Alternate exchange of `agents`: a publish matching no binding lands in intake, which
        dead-letters it with a reason, instead of being dropped by the broker."""
        return f"{self.namespace}.agents.unmatched"

    @property
    def tenants_exchange(self) -> str:
        """Where the router sends a report for a tenant (direct; each tenant queue is bound by
        its slug). A named exchange, not the default one: writing to the default exchange
        reaches every queue of the vhost, writing here reaches only this namespace's tenants."""
        return f"{self.namespace}.tenants"

    @property
    def dead_exchange(self) -> str:
        """Where every dead letter goes, routed by DLQ name (`invalid`, `unrouted`, `failed`)."""
        return f"{self.namespace}.dead"

    @property
    def intake_queue(self) -> str:
        """Every report agents publish, and every publish that matched no binding."""
        return f"{self.namespace}.intake"

    @property
    def register_queue(self) -> str:
        """Registration requests (routing key `register`), answered by direct reply-to."""
        return f"{self.namespace}.register"

    @property
    def router_queue(self) -> str:
        """The third hop of the three-hop version (validated reports waiting for the router):
        drained by the router and deleted by `migrate` once empty; never declared."""
        return f"{self.namespace}.router"

    @property
    def tenant_queue_prefix(self) -> str:
        """The start of every tenant queue's name."""
        return f"{self.namespace}.tenant."

    def tenant_queue(self, slug: str) -> str:
        """A tenant's queue."""
        return f"{self.tenant_queue_prefix}{slug}"

    def slug_of_queue(self, queue: str) -> str | None:
        """The tenant slug a queue name belongs to, if it is a tenant queue."""
        if queue.startswith(self.tenant_queue_prefix):
            return queue[len(self.tenant_queue_prefix) :]
        return None

    def dlq(self, which: DeadLetterQueue | str) -> str:
        """A dead-letter queue (`invalid`, `unrouted`, `failed`)."""
        return f"{self.namespace}.dlq.{DeadLetterQueue(which).value}"

    def broker_user(self, role: str) -> str:
        """The RabbitMQ user of one broker role (`agent`, `router`, ...). Users are global to a
        broker, so the namespace is in the name; `-` because RabbitMQ names allow it and it
        cannot be mistaken for a queue's dot."""
        return f"{self.namespace}-{role}"

    @property
    def broker_user_prefix(self) -> str:
        """Every broker user of this deployment starts with this (teardown, clean-ups)."""
        return f"{self.namespace}-"

    def policy(self, which: str) -> str:
        """Broker policies carry what operators tune (delivery limit, dead-lettering)."""
        return f"{self.namespace}.{which}"

    # -- PostgreSQL LISTEN/NOTIFY ----------------------------------------------------------------

    @property
    def registry_channel(self) -> str:
        """Registry triggers NOTIFY here when a binding or a tenant changes (per database, so the
        namespace is already implied; kept here so nothing spells it twice)."""
        return "siloflow_registry_changes"

    @property
    def operators_channel(self) -> str:
        """Registry triggers NOTIFY here when an operator, their tokens or grants change: the
        API forgets who its callers are (per database, as `registry_channel`)."""
        return "siloflow_operator_changes"

    @property
    def catalog_channel(self) -> str:
        """A catalog import NOTIFYs here, in the shared database, as it commits a new revision:
        workers swap their index, the re-evaluation runner starts."""
        return "siloflow_catalog_revisions"


# The three dead-letter queues (`DeadLetterQueue`), by name.
DLQS: tuple[str, ...] = tuple(queue.value for queue in DeadLetterQueue)
