"""leakscope's command line: ``app`` holds the typer commands, ``main`` runs them."""

from leakscope.cli.app import app
from leakscope.cli.main import main

__all__ = ["app", "main"]
