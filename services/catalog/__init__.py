"""The vulnerability catalog's edge: reading feeds (`feed`), importing a revision into the shared
partition (`store`). The pure rules (version order, matching) are in `services.core.catalog`."""
