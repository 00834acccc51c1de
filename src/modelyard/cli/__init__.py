"""The ``modelyard`` command line (typer + rich)."""
