"""Options every subcommand of ``autonomic`` that opens a store accepts."""

from __future__ import annotations

import argparse

__all__ = ["connection_options"]


def connection_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let ``--store`` and ``--bus`` come after the subcommand too, as people type them
    (``autonomic runs list --store ...``); given there, they win over the global ones."""
    before = "(as before the command)"
    parser.add_argument("--store", default=argparse.SUPPRESS, help=f"store URL {before}")
    parser.add_argument("--bus", default=argparse.SUPPRESS, help=f"bus URL {before}")
    return parser
