"""`python -m services.cli` is the `siloflow` command."""

from services.cli.main import main

main()
