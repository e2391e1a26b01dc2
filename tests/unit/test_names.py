"""Names derived from the namespace: valid, within PostgreSQL's limits, one-to-one."""

from __future__ import annotations

import pytest

from services.core.errors import InvalidArgument
from services.core.names import Names, partition_of, validate_slug

PG_NAME_MAX = 63


@pytest.mark.parametrize(
    ("slug", "ok"),
    [
        ("acme", True),
        ("acme-eu", True),
        ("a1", True),
        ("a" + "b" * 38, True),
        ("a" + "b" * 39, False),  # 40 characters
        ("a", False),  # too short
        ("Acme", False),
        ("1acme", False),
        ("-acme", False),
        ("acme-", False),
        ("ac--me", False),
        ("acme_eu", False),
        ("acme eu", False),
        ("acmé", False),
        ("acme;drop", False),
        ("", False),
    ],
)
def test_slug_validation(slug: str, ok: bool) -> None:
    if ok:
        assert validate_slug(slug) == slug
    else:
        with pytest.raises(InvalidArgument, match="invalid tenant slug"):
            validate_slug(slug)


def test_longest_names_fit_postgresql() -> None:
    names = Names("n" * 16)
    slug = "s" + "x" * 38
    for name in (
        names.tenant_database(slug),
        names.tenant_owner_role(slug),
        names.provisioner_role,
        names.shared_database,
    ):
        assert len(name.encode()) <= PG_NAME_MAX, name


def test_names_are_one_to_one_and_carry_the_namespace() -> None:
    names = Names("blue")
    assert names.tenant_database("acme-eu") == "blue_tenant_acme_eu"
    assert names.tenant_database("acme-eu") != names.tenant_database("acmeeu")
    assert names.tenant_owner_role("acme") == "blue_owner_acme"
    assert all(
        n.startswith(names.role_prefix)
        for n in (names.provisioner_role, names.shared_database, names.tenant_database("x1"))
    )
    assert Names("green").tenant_database("acme") != names.tenant_database("acme")


@pytest.mark.parametrize(
    ("table", "partition"),
    [
        ("registry_tenants", "registry"),
        ("shared_cves", "shared"),
        ("hosts", "tenant"),
        ("registryish", "tenant"),
        ("sharedthing", "tenant"),
    ],
)
def test_partition_of(table: str, partition: str) -> None:
    assert partition_of(table) == partition
