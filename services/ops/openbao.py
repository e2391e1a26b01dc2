"""OpenBao's one-time set-up for a deployment (`siloflow openbao setup`, by an OpenBao
administrator): the database secrets engine, AppRole, the deployment's two policies and its two
AppRoles, the provisioner's and the services'."""

from __future__ import annotations

import hvac

from services.core.names import Names
from services.core.settings import Settings
from services.core.silo.credentials.openbao import OpenBao


def policies(names: Names, mount: str) -> dict[str, str]:
    """The two OpenBao policies of a deployment: the provisioner's and the services'."""
    prefix = names.openbao_prefix
    provisioner = f"""
path "{mount}/config/{prefix}*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "{mount}/roles/{prefix}*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "{mount}/rotate-root/{prefix}*" {{ capabilities = ["update"] }}
path "sys/leases/revoke-prefix/{mount}/creds/{prefix}*" {{ capabilities = ["update", "sudo"] }}
"""
    service = f"""
path "{mount}/creds/{prefix}*" {{ capabilities = ["read"] }}
path "sys/leases/renew" {{ capabilities = ["update"] }}
path "sys/leases/revoke" {{ capabilities = ["update"] }}
"""
    return {f"{prefix}provisioner": provisioner, f"{prefix}service": service}


def setup_with(client: hvac.Client, settings: Settings) -> dict[str, str]:
    """`setup` on a client already logged in as an OpenBao administrator."""
    names = Names(settings.namespace)
    mount = settings.openbao_mount
    if f"{mount}/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine(backend_type="database", path=mount)
    if "approle/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method(method_type="approle")
    out: dict[str, str] = {}
    for policy, rules in policies(names, mount).items():
        client.sys.create_or_update_policy(name=policy, policy=rules)
        who = policy.removeprefix(names.openbao_prefix)
        client.auth.approle.create_or_update_approle(
            role_name=policy, token_policies=[policy], token_ttl="1h", token_max_ttl="24h"
        )
        role_id = client.auth.approle.read_role_id(role_name=policy)["data"]["role_id"]
        secret = client.auth.approle.generate_secret_id(role_name=policy)["data"]["secret_id"]
        out[f"{who}_role_id"] = role_id
        out[f"{who}_secret_id"] = secret
    return out


async def setup(settings: Settings, admin_token: str) -> dict[str, str]:
    """One-time set-up by an OpenBao administrator: the database secrets engine at
    `openbao_mount`, AppRole, this deployment's policies and its two AppRoles (provisioner and
    services). Idempotent; returns each AppRole's role_id and a new secret_id."""
    bao = OpenBao(settings, token=admin_token)
    try:
        return await bao.call(lambda c: setup_with(c, settings))
    finally:
        bao.close()
