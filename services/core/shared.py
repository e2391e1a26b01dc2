"""The `shared_*` partition: reference data identical for every tenant (the vulnerability
catalog). Tenant tables refer to it softly, by key, never by foreign key."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
)

TS = DateTime(timezone=True)

metadata = MetaData()

cves = Table(
    "shared_cves",
    metadata,
    Column("cve_id", Text, primary_key=True),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("severity", Text, nullable=True),
    Column("cvss", Numeric(3, 1), nullable=True),
    Column("summary", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("cve_id ~ '^CVE-[0-9]{4}-[0-9]{4,}$'", name="shared_cves_id_format"),
    CheckConstraint("cvss between 0 and 10", name="shared_cves_cvss_range"),
)

# One row per catalog import that changed something: where it came from, how many advisories it
# holds, and its difference from the revision before.
catalog_revisions = Table(
    "shared_catalog_revisions",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("source", Text, nullable=False),
    Column("format", Text, nullable=False),
    Column("releases", ARRAY(Text), nullable=False),
    Column("imported_at", TS, nullable=False, server_default=func.now()),
    Column("advisories", Integer, nullable=False),
    Column("added", Integer, nullable=False),
    Column("changed", Integer, nullable=False),
    Column("removed", Integer, nullable=False),
    Column("digest", Text, nullable=False),
)

# The catalog in force: one record per (release, source package, CVE), as the Debian Security
# Tracker keys them; `revision` is the import that last added or changed it.
advisories = Table(
    "shared_advisories",
    metadata,
    Column("release", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("cve_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("fixed_version", Text, nullable=True),
    Column("urgency", Text, nullable=False),
    Column("scope", Text, nullable=True),
    Column("description", Text, nullable=True),
    Column("revision", Integer, nullable=False),
    PrimaryKeyConstraint("release", "source", "cve_id"),
    CheckConstraint(
        "status in ('resolved', 'open', 'undetermined')", name="shared_advisories_status"
    ),
    CheckConstraint("cve_id ~ '^CVE-[0-9]{4}-[0-9]{4,}$'", name="shared_advisories_cve_id"),
    CheckConstraint(
        "status <> 'resolved' or fixed_version is not null",
        name="shared_advisories_resolved_has_a_fix",
    ),
    Index("shared_advisories_revision", "revision"),
)

# Records a revision removed: what re-evaluation takes back.
advisories_removed = Table(
    "shared_advisories_removed",
    metadata,
    Column("revision", Integer, nullable=False),
    Column("release", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("cve_id", Text, nullable=False),
    PrimaryKeyConstraint("revision", "release", "source", "cve_id"),
)
