"""`siloflow tenant backup` and `tenant restore`: one tenant's silo, and nothing else, in a file.

The file is a tar of two members: `manifest.json` (the format, the tenant, its tenant-chain
revision, the dump's SHA-256 and the census of what it holds) and `silo.pgdump` (`pg_dump`'s
custom format, one consistent snapshot, taken while the tenant keeps committing). Both commands
run as the provisioner acting as the tenant's owner role, never as a superuser."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from services.core.db import ServerAddress, at_server, one_connection, provisioner_url
from services.core.domain import TenantStatus
from services.core.errors import InvalidArgument, ProvisioningError, TenantNotFound
from services.core.names import DEFAULT_PLACEMENT, Names, validate_slug
from services.core.pgadmin import (
    MAINTENANCE_DATABASE,
    drop_database,
    ensure_database,
    ensure_owner_role,
    set_role,
)
from services.core.registry import queries as registry
from services.core.settings import Settings
from services.ops import chains as migrator
from services.ops import dumps, records
from services.ops.credentials import credential_admin
from services.ops.tenants import (
    ensure_reader,
    migrate_tenant_database,
    registry_connection,
    require_multitenant,
    tenant_queue,
)

log = structlog.get_logger(__name__)

FORMAT = "siloflow-tenant-backup/1"
MANIFEST = "manifest.json"
DUMP = "silo.pgdump"

Say = Callable[[str], None]


@dataclass(frozen=True)
class Manifest:
    """What a backup file says of itself."""

    format: str
    tenant: str
    revision: str | None
    created_at: str
    dump_sha256: str
    dump_bytes: int
    rows: dict[str, int]
    ledger_ids: int
    ledger_digest: str

    @property
    def census(self) -> dumps.Census:
        """What the dump holds, to compare a restored silo with."""
        return dumps.Census(dict(self.rows), self.ledger_ids, self.ledger_digest)


def _silo(settings: Settings, record: registry.TenantRecord) -> dumps.Silo:
    if record.placement is None:
        raise ProvisioningError(record.slug, f"tenant {record.slug!r} has no placement")
    server = ServerAddress(record.placement.host, record.placement.port)
    url = at_server(provisioner_url(settings), server, record.db_name)
    return dumps.Silo(record.slug, url, Names(settings.namespace).tenant_owner_role(record.slug))


async def _revision(settings: Settings, silo: dumps.Silo) -> str | None:
    async with one_connection(silo.url, settings) as conn:
        await set_role(conn, silo.owner)
        return await migrator.current_revision(conn, "tenant")


def check_out(out: Path) -> None:
    """Refuse a backup file that exists (never overwritten) or a directory that does not."""
    if out.exists():
        raise InvalidArgument(f"{out} exists: choose another file, or remove it first")
    if not out.parent.is_dir():
        raise InvalidArgument(f"{out.parent} is not a directory")


async def backup(settings: Settings, slug: str, out: Path, say: Say) -> Manifest:
    """Write the tenant's silo to `out` (never over an existing file)."""
    require_multitenant(settings, "tenant backup")
    check_out(out)
    async with registry_connection(settings) as conn:
        record = await registry.get_tenant(conn, slug)
    if record is None:
        raise TenantNotFound(slug)
    if record.status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
        raise ProvisioningError(slug, f"tenant {slug!r} is {record.status}: nothing to back up")
    if record.move is not None and record.move.step.paused:
        raise ProvisioningError(
            slug, f"tenant {slug!r} is moving ({record.move.step}): back it up after the move"
        )
    silo = _silo(settings, record)
    revision = await _revision(settings, silo)
    with tempfile.TemporaryFile(dir=out.parent) as spool:
        sha256, census = await dumps.dump_to(silo, spool, settings, lambda _: None)
        size = spool.tell()
        manifest = Manifest(
            FORMAT,
            slug,
            revision,
            datetime.now(UTC).isoformat(),
            sha256,
            size,
            census.rows,
            census.ledger_ids,
            census.ledger_digest,
        )
        spool.seek(0)
        partial = out.with_name(f".{out.name}.partial")
        try:
            with tarfile.open(partial, "w") as tar:
                text = json.dumps(asdict(manifest), indent=2, sort_keys=True).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size = len(text)
                tar.addfile(info, io.BytesIO(text))
                info = tarfile.TarInfo(DUMP)
                info.size = size
                tar.addfile(info, spool)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    say(
        f"tenant {slug} (revision {revision}) backed up to {out}: {size / 2**20:,.1f} MiB, "
        f"{census.total_rows:,} rows, {census.ledger_ids:,} ledger ids"
    )
    log.info("tenant.backed_up", tenant=slug, file=str(out), bytes=size, revision=revision)
    return manifest


def read_manifest(path: Path) -> Manifest:
    """The file's manifest, checked: a siloflow backup this version can restore."""
    try:
        with tarfile.open(path, "r") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise KeyError(MANIFEST)
            data: dict[str, Any] = json.loads(member.read())
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise InvalidArgument(f"{path} is not a siloflow tenant backup ({exc})") from None
    if data.get("format") != FORMAT:
        raise InvalidArgument(
            f"{path} is a backup of format {data.get('format')!r}; this siloflow reads {FORMAT}"
        )
    try:
        manifest = Manifest(**data)
    except TypeError as exc:
        raise InvalidArgument(
            f"{path}: its manifest is not one this siloflow wrote ({exc})"
        ) from None
    known = {r.revision for r in migrator.script_directory("tenant").walk_revisions()}
    if manifest.revision is not None and manifest.revision not in known:
        raise InvalidArgument(
            f"{path} holds tenant schema revision {manifest.revision}, newer than this siloflow "
            f"knows (its head is {migrator.head_revision('tenant')}): restore it with the "
            "siloflow that made it, or a later one"
        )
    return manifest


async def restore(
    settings: Settings,
    slug: str,
    source: Path,
    *,
    placement: str | None,
    replace: str | None,
    say: Say,
) -> registry.TenantRecord:
    """Restore a backup into a new tenant `slug`, or into an existing suspended one (whose silo
    must be empty unless `replace` names it); then migrate it to this version's head."""
    require_multitenant(settings, "tenant restore")
    validate_slug(slug)
    manifest = read_manifest(source)
    if replace is not None and replace != slug:
        raise InvalidArgument(
            f"--replace-data-of {replace!r} does not name the tenant restored into ({slug!r})"
        )
    record = await _restore_target(settings, slug, placement, say)
    silo = _silo(settings, record)
    if record.status == TenantStatus.SUSPENDED:
        held = await _census_or_none(settings, silo)
        if held is not None and held.total_rows and replace is None:
            raise InvalidArgument(
                f"tenant {slug!r} has data ({held.total_rows:,} rows, {held.ledger_ids:,} "
                f"reports): to replace it with the backup, say so: --replace-data-of {slug}"
            )
        assert record.placement is not None
        server = ServerAddress(record.placement.host, record.placement.port)
        await credential_admin(settings).unregister(slug, server, record.db_name)
    await _fresh_database(settings, record)
    restored = await _restore_dump(silo, source, manifest)
    differences = manifest.census.differences(await dumps.census(silo, settings))
    if differences:
        raise ProvisioningError(
            slug, "the restored silo is not the backup's: " + "; ".join(differences)
        )
    assert record.placement is not None
    server = ServerAddress(record.placement.host, record.placement.port)
    revision = await migrate_tenant_database(settings, server, record.db_name, silo.owner)
    await ensure_reader(settings, server, record.db_name, slug)
    await credential_admin(settings).register(slug, server, record.db_name)
    await tenant_queue(settings, slug, declare=True)
    async with registry_connection(settings) as conn:
        await records.record_migration(conn, record.id, revision=revision, error=None)
        if record.status == TenantStatus.PROVISIONING:
            await records.set_status(conn, record.id, TenantStatus.ACTIVE)
        await conn.commit()
        after = await registry.get_tenant(conn, slug)
    assert after is not None
    migrated = (
        "" if revision == manifest.revision else f", migrated {manifest.revision} -> {revision}"
    )
    say(
        f"restored {source} into tenant {slug}: {restored / 2**20:,.1f} MiB, "
        f"{manifest.census.total_rows:,} rows, {manifest.ledger_ids:,} ledger ids{migrated}"
        + (
            f"; it is suspended: `siloflow tenant resume {slug}`"
            if after.status == TenantStatus.SUSPENDED
            else ""
        )
    )
    log.info("tenant.restored", tenant=slug, file=str(source), revision=revision)
    return after


async def _restore_target(
    settings: Settings, slug: str, placement: str | None, say: Say
) -> registry.TenantRecord:
    """The tenant to restore into: recorded anew (provisioning) on the placement, or an
    existing one that may take it."""
    async with registry_connection(settings) as conn:
        record = await registry.get_tenant(conn, slug)
        if record is not None:
            _check_restorable(record, placement)
            return record
        target = await records.get_placement(conn, placement or DEFAULT_PLACEMENT)
        if target is None:
            raise InvalidArgument(f"unknown placement {placement or DEFAULT_PLACEMENT!r}")
        tenant_id = await records.insert_tenant(
            conn,
            slug=slug,
            name=slug,
            placement=target.name,
            db_name=Names(settings.namespace).tenant_database(slug),
        )
        await conn.commit()
        record = await registry.get_tenant_by_id(conn, tenant_id)
    assert record is not None
    say(f"tenant {slug} recorded on placement {target.name}")
    return record


def _check_restorable(record: registry.TenantRecord, placement: str | None) -> None:
    if placement is not None and (record.placement is None or record.placement.name != placement):
        raise InvalidArgument(
            f"tenant {record.slug!r} exists on placement "
            f"{record.placement.name if record.placement else None!r}: restore it there (omit "
            "--placement), or move it first"
        )
    if record.move is not None:
        raise ProvisioningError(
            record.slug, f"tenant {record.slug!r} is moving: restore it after the move"
        )
    if record.status == TenantStatus.ACTIVE:
        raise ProvisioningError(
            record.slug,
            f"tenant {record.slug!r} is active: suspend it first (`siloflow tenant suspend "
            f"{record.slug}`), so nothing commits while its silo is replaced",
        )
    if record.status == TenantStatus.DELETING:
        raise ProvisioningError(record.slug, f"tenant {record.slug!r} is being deleted")


async def _restore_dump(silo: dumps.Silo, source: Path, manifest: Manifest) -> int:
    """The file's dump, checked against its manifest, restored into the silo's database."""
    with tarfile.open(source, "r") as tar:
        dump = tar.extractfile(DUMP)
        if dump is None:
            raise InvalidArgument(f"{source} holds no {DUMP}")
        digest = hashlib.sha256()
        while block := dump.read(1 << 20):
            digest.update(block)
        if digest.hexdigest() != manifest.dump_sha256:
            raise InvalidArgument(f"{source}: the dump's SHA-256 is not the manifest's")
        dump.seek(0)
        return await dumps.restore_from(silo, dump, lambda _: None)


async def _census_or_none(settings: Settings, silo: dumps.Silo) -> dumps.Census | None:
    try:
        return await dumps.census(silo, settings)
    except Exception:  # no database (a restore interrupted before it): nothing to lose
        return None


async def _fresh_database(settings: Settings, record: registry.TenantRecord) -> None:
    """The tenant's owner role, and its database dropped and created empty."""
    assert record.placement is not None
    server = ServerAddress(record.placement.host, record.placement.port)
    owner = Names(settings.namespace).tenant_owner_role(record.slug)
    url = at_server(provisioner_url(settings), server, MAINTENANCE_DATABASE)
    async with one_connection(url, settings, autocommit=True) as conn:
        await ensure_owner_role(conn, owner)
        await drop_database(conn, record.db_name)
        await ensure_database(conn, record.db_name, owner)
