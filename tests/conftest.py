"""Fixtures for every suite: logs captured per test; real-service fixtures live in the
integration and end-to-end conftests."""
