"""One line for each failure of what a command needs: what failed, the setting that points at
it, what to do; and a service's outage said once."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
import structlog
from aiormq.exceptions import AMQPConnectionError, ProbableAuthenticationError
from structlog.testing import capture_logs

from services.core.diagnosis import Outage, explain, public
from services.core.errors import DatabaseUnavailable
from services.core.settings import load_settings

SETTINGS = load_settings(
    namespace="acme",
    registry_dsn="postgresql://postgres:pw@db.internal:5433/acme_registry",
    amqp_url="amqp://ops:secret@mq.internal:5673/acme",
    management_url="http://ops:secret@mq.internal:15673",
)
ROLE = "acme_provisioner"
BROKER = "('mq.internal', 5673)"


def caused(outer: BaseException, inner: BaseException) -> BaseException:
    """`outer`, raised from `inner` (as the code raises them)."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (
            asyncpg.InvalidCatalogNameError('database "acme_registry" does not exist'),
            ["nothing is bootstrapped", "SILOFLOW_NAMESPACE", "siloflow bootstrap"],
        ),
        (
            asyncpg.InvalidAuthorizationSpecificationError(
                'role "acme_provisioner" does not exist'
            ),
            ["nothing is bootstrapped", "SILOFLOW_REGISTRY_DSN", "siloflow bootstrap"],
        ),
        (
            asyncpg.InvalidPasswordError('password authentication failed for user "x"'),
            ["refused the login", "SILOFLOW_PROVISIONER_PASSWORD", "correct"],
        ),
        (
            asyncpg.UndefinedTableError('relation "registry_tenants" does not exist'),
            ["not migrated", "siloflow migrate"],
        ),
        (
            caused(
                DatabaseUnavailable("the registry", "refused"),
                ConnectionRefusedError(111, "Connect call failed ('db.internal', 5433)"),
            ),
            ["PostgreSQL", "db.internal:5433 is unreachable", "SILOFLOW_REGISTRY_DSN"],
        ),
        (
            DatabaseUnavailable("the registry", 'database "acme_registry" is not accepting'),
            ["the registry is unreachable", "SILOFLOW_REGISTRY_DSN"],
        ),
        (
            AMQPConnectionError(
                ConnectionRefusedError(111, "Connect call failed ('mq.internal', 5673)")
            ),
            ["RabbitMQ at mq.internal:5673 is unreachable", "SILOFLOW_AMQP_URL"],
        ),
        (
            ProbableAuthenticationError("ACCESS_REFUSED"),
            ["RabbitMQ at mq.internal:5673 refused the login", "SILOFLOW_AMQP_URL"],
        ),
        (
            httpx.ConnectError(
                "All connection attempts failed",
                request=httpx.Request("GET", "http://mq.internal:15673/api/queues"),
            ),
            ["management API at mq.internal:15673 is unreachable", "SILOFLOW_MANAGEMENT_URL"],
        ),
        (
            httpx.HTTPStatusError(
                "401",
                request=httpx.Request("GET", "http://mq.internal:15673/api/queues"),
                response=httpx.Response(401),
            ),
            ["refused the user (HTTP 401)", "SILOFLOW_MANAGEMENT_URL"],
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_each_failure_is_one_line_naming_its_setting(exc: BaseException, says: list[str]) -> None:
    line = explain(exc, SETTINGS)
    assert line is not None
    assert "\n" not in line
    for words in says:
        assert words in line, line
    assert "secret" not in line and ":pw@" not in line  # passwords never shown


PLACEMENT = ("db2.internal", 5460)


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (
            caused(
                DatabaseUnavailable("database postgres on db2", "no role", server=PLACEMENT),
                asyncpg.InvalidAuthorizationSpecificationError(
                    'role "acme_provisioner" does not exist'
                ),
            ),
            ["db2.internal:5460", "not prepared", "--port 5460 --admin-dsn"],
        ),
        (
            caused(
                DatabaseUnavailable("database postgres on db2", "refused", server=PLACEMENT),
                asyncpg.InvalidPasswordError('password authentication failed for user "x"'),
            ),
            ["db2.internal:5460 (a placement's server", "refused the login", "--admin-dsn"],
        ),
        (
            caused(
                DatabaseUnavailable("tenant far's database", "refused", server=PLACEMENT),
                ConnectionRefusedError(111, "Connect call failed ('db2.internal', 5460)"),
            ),
            ["db2.internal:5460 (a placement's server", "is unreachable", "start it"],
        ),
        (
            # A tenant's database named by slug only: the address in the error places it.
            caused(
                DatabaseUnavailable("tenant far's database", "refused"),
                ConnectionRefusedError(111, "Connect call failed ('db2.internal', 5460)"),
            ),
            ["db2.internal:5460 (a placement's server", "is unreachable"],
        ),
    ],
    ids=["role-missing", "login-refused", "unreachable", "unreachable-by-address"],
)
def test_a_placements_server_is_named_never_the_registrys(
    exc: BaseException, says: list[str]
) -> None:
    line = explain(exc, SETTINGS)
    assert line is not None and "\n" not in line
    for words in says:
        assert words in line, line
    assert "db.internal:5433" not in line and "SILOFLOW_REGISTRY_DSN" not in line, line


def test_a_bug_is_not_explained_away() -> None:
    assert explain(KeyError("slug"), SETTINGS) is None
    assert explain(ZeroDivisionError(), SETTINGS) is None


def test_public_hides_only_the_password() -> None:
    assert public("amqp://ops:secret@mq:5672/acme") == "amqp://ops:***@mq:5672/acme"
    assert public("amqp://mq:5672/") == "amqp://mq:5672/"


def test_an_outage_is_said_once_then_its_end() -> None:
    # A CLI test before this one may have configured a warning-level filter; debug lines count here.
    structlog.reset_defaults()
    outage = Outage("thing.unavailable", SETTINGS, "SILOFLOW_REGISTRY_DSN", listener="x")
    refused = ConnectionRefusedError(111, "Connect call failed ('db.internal', 5433)")
    with capture_logs() as logs:
        for _ in range(5):
            outage.failed(refused, retry_in_s=1)
        assert outage.ongoing
        outage.recovered()
        outage.recovered()  # nothing more to say
    levels = [(e["event"], e["log_level"]) for e in logs]
    assert levels == [("thing.unavailable", "warning")] + [("thing.unavailable", "debug")] * 4 + [
        ("thing.unavailable.recovered", "info")
    ]
    assert "SILOFLOW_REGISTRY_DSN" in logs[0]["error"] and logs[0]["listener"] == "x"
    assert not outage.ongoing


def test_an_error_without_an_address_is_placed_by_what_the_caller_talked_to() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")  # uvloop names no address
    assert explain(refused, SETTINGS) is None  # four servers it could be: not guessed
    line = explain(refused, SETTINGS, of="SILOFLOW_REGISTRY_DSN")
    assert line is not None
    assert "db.internal:5433 is unreachable ([Errno 111] Connection refused)" in line
    assert "SILOFLOW_REGISTRY_DSN" in line


def test_a_wrapped_connection_error_is_said_in_the_systems_words() -> None:
    # requests (under hvac) wraps the refusal three deep, in one long line.
    wrapped = ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=8200): Max retries exceeded with url: "
        "/v1/sys/mounts (Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', "
        'port=8200): Failed to establish a new connection: [Errno 111] Connection refused"))'
    )
    settings = SETTINGS.model_copy(update={"openbao_addr": "http://127.0.0.1:8200"})
    line = explain(wrapped, settings, of="SILOFLOW_OPENBAO_ADDR")
    assert line is not None
    assert "OpenBao at 127.0.0.1:8200 is unreachable ([Errno 111] Connection refused)" in line
    assert "Max retries" not in line
