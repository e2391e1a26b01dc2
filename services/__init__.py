"""siloflow's services: ingest, router, workers, and the core package they share."""
