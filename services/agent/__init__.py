"""The reference agent client: how an agent builds and publishes protocol-v1 reports."""
