"""The three chains, read without a database: one head each, distinct version tables, every
declared table in its partition, and no foreign key across partitions."""

from __future__ import annotations

import pytest

from migrations.env_common import include_object_for
from migrations.metadata import METADATA
from services.core.names import CHAINS, VERSION_TABLES, partition_of
from services.ops import chains as migrator


@pytest.mark.parametrize("chain", CHAINS)
def test_each_chain_has_exactly_one_head(chain: str) -> None:
    assert len(migrator.script_directory(chain).get_heads()) == 1


def test_version_tables_are_distinct_and_in_their_partition() -> None:
    assert len(set(VERSION_TABLES.values())) == len(CHAINS)
    for chain, table in VERSION_TABLES.items():
        assert partition_of(table) == chain


@pytest.mark.parametrize("chain", CHAINS)
def test_declared_tables_carry_their_partition_prefix(chain: str) -> None:
    tables = METADATA[chain].tables
    assert tables, f"{chain} declares no tables"
    for name in tables:
        assert partition_of(name) == chain, name


@pytest.mark.parametrize("chain", CHAINS)
def test_no_declared_foreign_key_leaves_its_partition(chain: str) -> None:
    for table in METADATA[chain].tables.values():
        for fk in table.foreign_keys:
            assert partition_of(fk.column.table.name) == chain, (
                f"{table.name} -> {fk.target_fullname}"
            )


@pytest.mark.parametrize("chain", CHAINS)
def test_autogenerate_sees_only_its_own_partition(chain: str) -> None:
    include = include_object_for(chain)
    for other_chain, metadata in METADATA.items():
        for name, table in metadata.tables.items():
            assert include(table, name, "table", False, None) is (other_chain == chain)
    for version_table in VERSION_TABLES.values():
        assert include(None, version_table, "table", True, None) is False
