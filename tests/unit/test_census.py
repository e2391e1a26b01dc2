"""How a move (and a restore) tells a copy from its source: every table's row count and the
ledger's message ids."""

from __future__ import annotations

from services.ops.dumps import Census

SOURCE = Census({"agent_messages": 3, "hosts": 1}, 3, "abc")


def test_a_faithful_copy_has_no_differences() -> None:
    assert SOURCE.differences(Census(dict(SOURCE.rows), 3, "abc")) == []
    assert SOURCE.total_rows == 4


def test_each_difference_is_named() -> None:
    fewer = Census({"agent_messages": 2, "hosts": 1}, 2, "abd")
    assert SOURCE.differences(fewer) == [
        "agent_messages: 3 rows against 2",
        "the ledger's message ids differ (3 against 2)",
    ]
    # The same count with other ids: only the digest tells them apart.
    assert SOURCE.differences(Census(dict(SOURCE.rows), 3, "xyz")) == [
        "the ledger's message ids differ (3 against 3)"
    ]
    missing_table = Census({"agent_messages": 3}, 3, "abc")
    assert SOURCE.differences(missing_table) == ["hosts: 1 rows against None"]
