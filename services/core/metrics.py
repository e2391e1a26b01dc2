"""Every metric siloflow exports, in one place (prometheus-client), and the small HTTP endpoint
each service serves them on with its health: `/metrics`, `/healthz` (the process runs),
`/readyz` (it is consuming)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = structlog.get_logger(__name__)

_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)


@functools.cache
def labelled(metric: _Metric, *values: str) -> _Metric:
    """`metric.labels(*values)`, looked up once: the hot paths count every report, and
    prometheus-client checks the label values and takes a lock on every `labels` call."""
    return metric.labels(*values)


REPORTS = Counter(
    "siloflow_reports_total", "Reports handled, by stage and outcome.", ["stage", "outcome"]
)
DEAD_LETTERS = Counter(
    "siloflow_dead_letters_total",
    "Reports dead-lettered, by stage and reason.",
    ["stage", "reason"],
)
COMMITS = Counter("siloflow_commits_total", "Reports committed, by tenant.", ["tenant"])
BATCH_SIZE = Histogram(
    "siloflow_batch_reports",
    "Reports per committed tenant transaction.",
    buckets=(1, 5, 10, 25, 50, 100, 200, 500, 1000),
)
END_TO_END = Histogram(
    "siloflow_end_to_end_seconds",
    "From the agent's sent_at to the commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ROUTER_CACHE_SIZE = Gauge("siloflow_router_cache_hosts", "Host bindings the router holds.")
ROUTER_LOOKUPS = Counter(
    "siloflow_router_lookups_total", "Router registry lookups, by cache result.", ["result"]
)
ROUTER_LOOKUP_SECONDS = Histogram(
    "siloflow_router_lookup_seconds",
    "Time to resolve a host to its tenant, by cache result (a miss queries the registry).",
    ["result"],
    buckets=(
        *(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005),
        *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    ),
)
QUEUE_LAG = Gauge(
    "siloflow_queue_lag_seconds",
    "Age (from the agent's timestamp) of the last message a stage took from its queue: how long "
    "reports wait. Quorum queues do not expose their head's age, so consumers measure it.",
    ["stage", "tenant"],
)
UNDECODABLE = Counter(
    "siloflow_undecodable_headers_total",
    "Deliveries whose AMQP properties the client library could not decode: each is handled as "
    "undecodable (dead-lettered or refused), its connection untouched.",
)
REGISTRATIONS_UNANSWERED = Counter(
    "siloflow_registrations_unanswered_total",
    "Registration requests answered nowhere, by why: a reply_to that is not the requester's own "
    "direct reply-to address (never published to), or properties that could not be decoded.",
    ["why"],
)
CATALOG_REVISION = Gauge(
    "siloflow_catalog_revision",
    "The vulnerability catalog revision this process matches against (0: none yet).",
)
CATALOG_REEVALUATED = Counter(
    "siloflow_catalog_reevaluated_hosts_total",
    "Hosts whose findings the sweeper matched again after a new catalog revision, by tenant.",
    ["tenant"],
)
CATALOG_AGE = Gauge(
    "siloflow_catalog_age_seconds",
    "How old the vulnerability catalog revision in force is (set by the sweeper; 0: none).",
)
CATALOG_HOSTS_BEHIND = Gauge(
    "siloflow_catalog_hosts_behind",
    "Hosts of a tenant not yet evaluated against the catalog revision in force, after a pass.",
    ["tenant"],
)
FINDINGS_OPEN = Gauge(
    "siloflow_findings_open",
    "Open vulnerability findings, by tenant and the advisory's urgency (set by the sweeper).",
    ["tenant", "urgency"],
)
CREDENTIAL_RENEWALS = Counter(
    "siloflow_credential_renewals_total",
    "Tenant database logins issued or renewed.",
    ["broker"],
)


class HealthServer:
    """Serves /metrics, /healthz and /readyz on a port (0 or None: not at all)."""

    def __init__(self, port: int | None, ready: Callable[[], bool]) -> None:
        self._port = port
        self._ready = ready
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Start serving, if a port is set."""
        if not self._port:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "0.0.0.0", self._port).start()
        log.info("health.listening", port=self._port)

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready = self._ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)
