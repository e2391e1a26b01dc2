"""Fixtures for every suite: logs captured per test; real-service fixtures live in the
integration and end-to-end conftests."""

import os

# The fault suite needs servers of its own (a RabbitMQ cluster, a PostgreSQL it may crash):
# `make faults` starts them and sets SILOFLOW_FAULTS; the quick run never collects it.
collect_ignore = [] if os.environ.get("SILOFLOW_FAULTS") else ["faults"]
