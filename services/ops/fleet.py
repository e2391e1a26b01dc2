"""The operator's side of a simulated fleet (`services.agent.simulate.Operator`): hosts bound by
hand and enrollment tokens issued, by the same back-ends as `siloflow host bind` and `token
issue`."""

from __future__ import annotations

import uuid
from datetime import timedelta

from services.core.settings import Settings
from services.ops import bindings, tokens

# A simulator's token lives as long as an enrollment run may take.
SIMULATOR_TOKEN_TTL = timedelta(hours=1)


class FleetOperator:
    """Binds and issues for a simulator, with the deployment's settings."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def bind(self, host_id: uuid.UUID, tenant: str) -> None:
        """Bind the host to the tenant (again: unchanged)."""
        await bindings.bind(self._settings, host_id, tenant, move=False)

    async def issue(self, tenant: str, uses: int) -> str:
        """A token of the tenant for `uses` hosts, noted as the simulator's."""
        issued = await tokens.issue(
            self._settings, tenant, ttl=SIMULATOR_TOKEN_TTL, uses=uses, note="simulator"
        )
        return issued.token
