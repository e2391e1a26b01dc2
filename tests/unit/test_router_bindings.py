"""The router's compact binding cache, pure: answers as the registry gave them or none at all,
within its bound and its age."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.domain import TenantStatus
from services.core.routing import Binding, TenantState
from services.router.bindings import UNBOUND, BindingCache, Cached

ACME = TenantState(uuid.UUID(int=1), "acme", TenantStatus.ACTIVE)
GLOBEX = TenantState(uuid.UUID(int=2), "globex", TenantStatus.ACTIVE)
TTL = 300.0


def bound(host: uuid.UUID, tenant: TenantState, revoked: bool = False) -> Binding:
    return Binding(host, tenant.id, revoked)


def test_it_answers_what_it_was_told() -> None:
    cache = BindingCache(100, TTL, now=0)
    host, revoked, unbound = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert cache.get(host, 0) is None
    cache.put(host, bound(host, ACME), ACME, 0)
    cache.put(revoked, bound(revoked, GLOBEX, revoked=True), GLOBEX, 0)
    cache.put(unbound, None, None, 0)
    assert cache.get(host, 1) == Cached(bound(host, ACME), ACME)
    assert cache.get(revoked, 1) == Cached(bound(revoked, GLOBEX, revoked=True), GLOBEX)
    assert cache.get(unbound, 1) is UNBOUND
    assert cache.size == 3


def test_a_binding_to_a_tenant_the_registry_does_not_know_is_asked_again() -> None:
    cache = BindingCache(100, TTL, now=0)
    host = uuid.uuid4()
    cache.put(host, bound(host, ACME), None, 0)
    assert cache.get(host, 1) is None


def test_notices_forget_a_host_or_every_host_of_a_tenant() -> None:
    cache = BindingCache(100, TTL, now=0)
    a1, a2, g1 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for host, tenant in ((a1, ACME), (a2, ACME), (g1, GLOBEX)):
        cache.put(host, bound(host, tenant), tenant, 0)
    cache.forget_host(a1)
    assert cache.get(a1, 1) is None and cache.get(a2, 1) is not None
    cache.forget_tenant(ACME.id)
    assert cache.get(a2, 1) is None
    assert cache.get(g1, 1) == Cached(bound(g1, GLOBEX), GLOBEX)
    suspended = TenantState(ACME.id, "acme", TenantStatus.SUSPENDED)
    cache.put(a2, bound(a2, ACME), suspended, 2)  # the registry's new answer
    assert cache.get(a2, 3) == Cached(bound(a2, ACME), suspended)


def test_the_bound_keeps_the_latest_half_at_least_and_the_whole_at_most() -> None:
    cache = BindingCache(10, TTL, now=0)
    hosts = [uuid.uuid4() for _ in range(57)]
    for i, host in enumerate(hosts):
        cache.put(host, bound(host, ACME), ACME, 0)
        assert cache.size <= 10
        assert all(cache.get(h, 0) is not None for h in hosts[max(0, i - 4) : i + 1])
    assert cache.get(hosts[0], 0) is None


def test_no_answer_outlives_the_ttl() -> None:
    cache = BindingCache(100, TTL, now=0)
    early, late, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(early, bound(early, ACME), ACME, 0)
    assert cache.get(early, 1) is not None
    # Half the ttl on: the tenant's state is read again (one miss a tenant)...
    assert cache.get(early, TTL / 2 + 1) is None
    cache.put(late, bound(late, ACME), ACME, TTL / 2 + 2)
    # ...and the older generation is served, not renewed...
    assert cache.get(early, TTL / 2 + 3) == Cached(bound(early, ACME), ACME)
    # ...so at the ttl it is gone, while the younger one stays.
    cache.put(other, bound(other, ACME), ACME, TTL + 1)
    assert cache.get(early, TTL + 2) is None
    assert cache.get(late, TTL + 2) == Cached(bound(late, ACME), ACME)
    # Nothing looked up for a whole ttl: everything goes at once.
    assert cache.get(late, 4 * TTL) is None
    assert cache.size == 0


def test_a_late_rotation_does_not_stretch_the_ttl() -> None:
    """Generations turn on a fixed grid: a rotation made late (nothing was looked up at the
    half-ttl mark) still drops its entries by the ttl after they came."""
    cache = BindingCache(100, TTL, now=0)
    early, other = uuid.uuid4(), uuid.uuid4()
    cache.put(early, bound(early, ACME), ACME, 0)
    assert cache.get(early, 0.8 * TTL) is None  # the state is read again (early is old now)
    cache.put(other, bound(other, ACME), ACME, 0.8 * TTL)
    assert cache.get(early, 0.9 * TTL) == Cached(bound(early, ACME), ACME)
    assert cache.get(early, 1.25 * TTL) is None  # a rotation at 0.8 ttl would still serve it


def test_clear_forgets_everything() -> None:
    cache = BindingCache(100, TTL, now=0)
    host = uuid.uuid4()
    cache.put(host, bound(host, ACME), ACME, 0)
    cache.clear(1)
    assert cache.get(host, 1) is None and cache.size == 0


HOSTS = [uuid.UUID(int=(7 << 100) + i) for i in range(2)]
TENANTS = [TenantState(uuid.UUID(int=1000 + i), f"t{i}", TenantStatus.ACTIVE) for i in range(2)]
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"),
            st.sampled_from(HOSTS),
            st.one_of(st.none(), st.sampled_from(TENANTS)),
            st.booleans(),
            st.sampled_from(list(TenantStatus)),
        ),
        st.tuples(st.just("get"), st.sampled_from(HOSTS)),
        st.tuples(st.just("forget_host"), st.sampled_from(HOSTS)),
        st.tuples(st.just("forget_tenant"), st.sampled_from(TENANTS)),
        st.tuples(
            st.just("wait"),
            st.one_of(st.sampled_from([f * TTL for f in (0.1, 0.3, 0.45, 0.55, 0.8, 0.99)])),
        ),
    ),
    max_size=80,
)


@settings(max_examples=1000, deadline=None)
@given(operations, st.integers(1, 8))
def test_it_never_answers_other_than_the_registry_last_did(
    ops: list[tuple[object, ...]], bound_hosts: int
) -> None:
    """Against a model of the registry: whatever the cache answers is what the registry said
    last about that host and that tenant, with no notice since, within the ttl."""
    cache = BindingCache(bound_hosts, TTL, now=0)
    now = 0.0
    told: dict[uuid.UUID, tuple[Binding | None, float]] = {}  # host -> answer, when
    states: dict[uuid.UUID, tuple[TenantState, float]] = {}  # tenant -> state, when
    for op in ops:
        if op[0] == "put":
            _, host, tenant, revoked, status = op
            binding = None if tenant is None else Binding(host, tenant.id, revoked)
            state = None if tenant is None else TenantState(tenant.id, tenant.slug, status)
            cache.put(host, binding, state, now)
            told[host] = (binding, now)
            if state is not None:
                states[state.id] = (state, now)
        elif op[0] == "get":
            host = op[1]
            answer = cache.get(host, now)
            if answer is None:
                continue
            assert host in told, "an answer nobody gave"
            binding, at = told[host]
            assert now - at < TTL, "an answer past its ttl"
            assert answer.binding == binding
            if binding is not None:
                assert answer.tenant is not None
                assert binding.tenant_id in states, "a tenant's state after its notice"
                state, state_at = states[binding.tenant_id]
                assert answer.tenant == state and now - state_at < TTL
        elif op[0] == "forget_host":
            cache.forget_host(op[1])
            told.pop(op[1], None)
        elif op[0] == "forget_tenant":
            cache.forget_tenant(op[1].id)
            states.pop(op[1].id, None)
            # A host of a forgotten tenant may only answer once the state is told again.
        else:
            now += op[1]
        assert cache.size <= bound_hosts or (bound_hosts == 1 and cache.size <= 2)
