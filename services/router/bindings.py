"""The router's memory of the registry, compact and pure: host -> binding, tenant -> state.

A fleet of a million hosts must fit in a router: each cached host is one dict entry from its id
as a 128-bit integer to a small shared integer code (the tenant's index in a table of tenants,
and whether the binding is revoked), with no object of its own per host: about 90 bytes a host
(docs/scaling.md, "The router's memory"). Tenants are few and their states are kept whole.

Entries live in two generations. New answers go to the young one; when it holds half the bound,
or `ttl_s / 2` has passed, the old generation is dropped and the young one becomes old. So the
cache holds the latest half of the bound at least and the whole bound at most, evicting costs
O(1) per entry (a whole generation at a time, no per-entry bookkeeping), and no answer is older
than `ttl_s`: an entry found in the old generation is served but not renewed, so it is read
again from the registry within `ttl_s / 2`. Tenant states are forgotten every `ttl_s / 2` (one
registry read a tenant). Registry notices forget single entries at once: the TTL is only the
net under a notice that never came."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.core.routing import Binding, TenantState

_UNBOUND = -1  # the code of a host the registry binds to no tenant


@dataclass(frozen=True)
class Cached:
    """What the cache knows of a host: its binding (None: bound to no tenant) and its tenant's
    state (None when unbound)."""

    binding: Binding | None
    tenant: TenantState | None


UNBOUND = Cached(None, None)


class BindingCache:
    """Host ids to bindings and tenant states, bounded by `max_hosts` and by age. Pure: the
    clock is passed in."""

    def __init__(self, max_hosts: int, ttl_s: float, now: float) -> None:
        self._generation_hosts = max(max_hosts // 2, 1)
        self._generation_s = ttl_s / 2
        self._young: dict[int, int] = {}
        self._old: dict[int, int] = {}
        self._rotated_at = self._states_at = now
        # Tenants by index: the codes in the host tables point here. A code is
        # `index * 2 + revoked`; `_codes[code]` is that integer, made once and shared by every
        # host that carries it (integers past 256 are otherwise an object each).
        self._index: dict[uuid.UUID, int] = {}
        self._tenant_ids: list[uuid.UUID] = []
        self._states: list[TenantState | None] = []
        self._codes: list[int] = []

    @property
    def size(self) -> int:
        """Hosts held now (a host in both generations counts twice until the old one goes)."""
        return len(self._young) + len(self._old)

    def get(self, host_id: uuid.UUID, now: float) -> Cached | None:
        """The cached answer for the host, or None when it must be asked of the registry (not
        cached, or its tenant's state was forgotten)."""
        self._age(now)
        key = host_id.int
        code = self._young.get(key)
        if code is None:
            code = self._old.get(key)
            if code is None:
                return None
        if code == _UNBOUND:
            return UNBOUND
        index, revoked = divmod(code, 2)
        state = self._states[index]
        if state is None:
            return None
        return Cached(Binding(host_id, self._tenant_ids[index], bool(revoked)), state)

    def put(
        self,
        host_id: uuid.UUID,
        binding: Binding | None,
        tenant: TenantState | None,
        now: float,
    ) -> None:
        """Remember the registry's answer for the host: its binding (None: unbound) and, when
        the registry knows it, its tenant's state."""
        self._age(now)
        if binding is None:
            code = _UNBOUND
        else:
            index = self._tenant_index(binding.tenant_id)
            if tenant is not None:
                self._states[index] = tenant
            code = self._codes[index * 2 + binding.revoked]
        if len(self._young) >= self._generation_hosts:
            self._old, self._young = self._young, {}  # by size: the states stay
            self._rotated_at = now
        self._young[host_id.int] = code

    def forget_host(self, host_id: uuid.UUID) -> None:
        """The host's binding changed: ask the registry next time."""
        key = host_id.int
        self._young.pop(key, None)
        self._old.pop(key, None)

    def forget_tenant(self, tenant_id: uuid.UUID) -> None:
        """The tenant changed (suspended, resumed, deleted): ask the registry next time, for
        every host of it."""
        index = self._index.get(tenant_id)
        if index is not None:
            self._states[index] = None

    def clear(self, now: float) -> None:
        """Forget everything."""
        self._young = {}
        self._old = {}
        self._index.clear()
        self._tenant_ids.clear()
        self._states.clear()
        self._codes.clear()
        self._rotated_at = self._states_at = now

    def _tenant_index(self, tenant_id: uuid.UUID) -> int:
        index = self._index.get(tenant_id)
        if index is None:
            index = len(self._tenant_ids)
            self._index[tenant_id] = index
            self._tenant_ids.append(tenant_id)
            self._states.append(None)
            self._codes.extend((index * 2, index * 2 + 1))
        return index

    def _age(self, now: float) -> None:
        if now - self._states_at >= self._generation_s:
            # Tenant states are few: each is read again, once, every half ttl.
            self._states = [None] * len(self._states)
            self._states_at = now
        elapsed = now - self._rotated_at
        if elapsed >= 2 * self._generation_s:  # both generations are past their time
            self._old, self._young = {}, {}
            self._rotated_at = now
        elif elapsed >= self._generation_s:
            # On the grid, not at `now`: the young entries all came before the grid point, so
            # each leaves at most two generations (ttl_s) after it came.
            self._old, self._young = self._young, {}
            self._rotated_at += self._generation_s
