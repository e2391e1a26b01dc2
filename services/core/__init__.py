"""What every siloflow service shares: settings, names, errors, logging, the registry and the
tenant routing seam."""
