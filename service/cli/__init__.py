"""The ``sleuth`` command line (entry point ``service.cli:main``); one module per command group."""

from service.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
