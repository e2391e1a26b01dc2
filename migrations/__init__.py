"""The three Alembic chains (registry, shared, tenant), each with its own version table.
Run them with `siloflow migrate`; `alembic -c migrations/alembic.ini --name <chain>` works for
authoring revisions."""
