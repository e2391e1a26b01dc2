"""The vulnerability catalog's pure side: Debian version order (`versions`), the in-memory index
of one catalog revision and the matching of a host's packages against it (`matcher`). No I/O:
the importers and the re-evaluation runner (`services/catalog/`) and the workers feed it."""
