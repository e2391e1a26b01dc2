"""The `shared_*` partition: reference data identical for every tenant (a CVE catalog to start).
Tenant tables refer to it softly, by key, never by foreign key."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, MetaData, Numeric, Table, Text, func

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
