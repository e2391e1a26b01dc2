"""The tables of the three partitions, one SQLAlchemy `MetaData` each. The migration chains are
the source of truth for the live schema; these describe it for queries and for autogenerate."""

from services.core.registry.models import metadata as registry_metadata
from services.core.shared import metadata as shared_metadata
from services.core.silo.models import metadata as tenant_metadata

METADATA = {
    "registry": registry_metadata,
    "shared": shared_metadata,
    "tenant": tenant_metadata,
}

__all__ = ["METADATA", "registry_metadata", "shared_metadata", "tenant_metadata"]
