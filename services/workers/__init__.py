"""The workers service."""
