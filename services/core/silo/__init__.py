"""Tenant databases, the silos: the routing seam that turns a tenant into a connection of its own
(`databases`), its bounded engine cache (`engines`), the short-lived tenant logins
(`credentials/`) and the tenant tables (`models`). May import `registry` and the foundation."""
