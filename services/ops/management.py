"""The RabbitMQ management HTTP API, as operators' commands use it: policies (what operators
tune), users and their permissions, virtual hosts and queue statistics. The AMQP protocol can do
none of these, hence this client. No service uses it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from services.core.errors import ManagementError


class Management:
    """A small async client of the management API."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        parts = urlsplit(base_url)
        auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
        self.user = auth[0]
        netloc = parts.hostname or "127.0.0.1"
        if parts.port:
            netloc += f":{parts.port}"
        self._client = httpx.AsyncClient(
            base_url=f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/api",
            auth=auth,
            timeout=timeout_s,
        )

    async def close(self) -> None:
        """Close the client."""
        await self._client.aclose()

    async def __aenter__(self) -> Management:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ManagementError(
                f"the RabbitMQ management API at {self._client.base_url} is unreachable: {exc} "
                "(is the rabbitmq_management plugin enabled?)"
            ) from exc
        return response

    @staticmethod
    def _vhost(vhost: str) -> str:
        return quote(vhost, safe="")

    async def get_policy(self, vhost: str, name: str) -> dict[str, Any] | None:
        """The policy, if it exists."""
        response = await self._request("GET", f"/policies/{self._vhost(vhost)}/{quote(name)}")
        if response.status_code == 404:
            return None
        self._check(response, f"read policy {name}")
        result: dict[str, Any] = response.json()
        return result

    async def put_policy(
        self,
        vhost: str,
        name: str,
        *,
        pattern: str,
        definition: dict[str, Any],
        priority: int = 0,
        apply_to: str = "queues",
    ) -> None:
        """Create or replace a policy."""
        body = {
            "pattern": pattern,
            "definition": definition,
            "priority": priority,
            "apply-to": apply_to,
        }
        response = await self._request(
            "PUT", f"/policies/{self._vhost(vhost)}/{quote(name)}", json=body
        )
        self._check(response, f"set policy {name}")

    async def delete_policy(self, vhost: str, name: str) -> bool:
        """Delete a policy (none is fine); whether there was one."""
        response = await self._request("DELETE", f"/policies/{self._vhost(vhost)}/{quote(name)}")
        if response.status_code == 404:
            return False
        self._check(response, f"delete policy {name}")
        return True

    async def create_vhost(self, vhost: str, *, user: str = "guest") -> None:
        """Create a vhost and give `user` every right on it."""
        response = await self._request("PUT", f"/vhosts/{self._vhost(vhost)}")
        self._check(response, f"create vhost {vhost}")
        response = await self._request(
            "PUT",
            f"/permissions/{self._vhost(vhost)}/{quote(user)}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )
        self._check(response, f"grant {user} on {vhost}")

    async def put_user(self, name: str, *, password: str, tags: tuple[str, ...] = ()) -> None:
        """Create the user or reset its password and tags (idempotent)."""
        response = await self._request(
            "PUT",
            f"/users/{quote(name, safe='')}",
            json={"password": password, "tags": ",".join(tags)},
        )
        self._check(response, f"create user {name}")

    async def delete_user(self, name: str) -> bool:
        """Delete the user; False if there was none."""
        response = await self._request("DELETE", f"/users/{quote(name, safe='')}")
        if response.status_code == 404:
            return False
        self._check(response, f"delete user {name}")
        return True

    async def users(self) -> list[str]:
        """Every user's name."""
        response = await self._request("GET", "/users")
        self._check(response, "list users")
        return [user["name"] for user in response.json()]

    async def put_permissions(
        self, vhost: str, user: str, *, configure: str, write: str, read: str
    ) -> None:
        """Set a user's permissions on a vhost."""
        response = await self._request(
            "PUT",
            f"/permissions/{self._vhost(vhost)}/{quote(user, safe='')}",
            json={"configure": configure, "write": write, "read": read},
        )
        self._check(response, f"set {user}'s permissions on vhost {vhost}")

    async def put_topic_permissions(
        self, vhost: str, user: str, *, exchange: str, write: str, read: str
    ) -> None:
        """Set a user's topic permissions on one exchange of a vhost."""
        response = await self._request(
            "PUT",
            f"/topic-permissions/{self._vhost(vhost)}/{quote(user, safe='')}",
            json={"exchange": exchange, "write": write, "read": read},
        )
        self._check(response, f"set {user}'s topic permissions on {exchange}")

    async def delete_vhost(self, vhost: str) -> None:
        """Delete a vhost (none is fine)."""
        response = await self._request("DELETE", f"/vhosts/{self._vhost(vhost)}")
        if response.status_code != 404:
            self._check(response, f"delete vhost {vhost}")

    async def queue(self, vhost: str, name: str) -> dict[str, Any] | None:
        """A queue's statistics, if it exists."""
        response = await self._request(
            "GET", f"/queues/{self._vhost(vhost)}/{quote(name, safe='')}"
        )
        if response.status_code == 404:
            return None
        self._check(response, f"read queue {name}")
        result: dict[str, Any] = response.json()
        return result

    async def queues(self, vhost: str) -> list[dict[str, Any]]:
        """Every queue of the vhost, with its statistics."""
        response = await self._request("GET", f"/queues/{self._vhost(vhost)}")
        if response.status_code == 404:  # no such vhost: no queues
            return []
        self._check(response, "list queues")
        result: list[dict[str, Any]] = response.json()
        return result

    async def exchanges(self, vhost: str) -> list[str]:
        """The names of the vhost's exchanges (the broker's own included)."""
        response = await self._request("GET", f"/exchanges/{self._vhost(vhost)}")
        if response.status_code == 404:  # no such vhost: no exchanges
            return []
        self._check(response, "list exchanges")
        return [str(e["name"]) for e in response.json()]

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code == 401:
            raise ManagementError(
                f"RabbitMQ refused to {what}: its management API did not accept the user "
                f"{self.user!r} for this (HTTP 401): correct its password "
                "(SILOFLOW_MANAGEMENT_URL; a role user's in broker-users.json / "
                "SILOFLOW_BROKER_PASSWORDS), or give it the management tag this needs"
            )
        if response.status_code >= 400:
            raise ManagementError(
                f"RabbitMQ refused to {what}: HTTP {response.status_code} {response.text[:300]}"
            )
