"""The ``medallion`` command line: Typer apps that parse arguments and render results."""
