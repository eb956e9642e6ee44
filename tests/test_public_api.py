"""The public surface: everything in __all__ exists and nothing public is left out."""

from __future__ import annotations

import importlib
import pkgutil

import autonomic
from autonomic import MissingExtra


def test_all_names_are_importable() -> None:
    for name in autonomic.__all__:
        assert hasattr(autonomic, name), name


def test_every_module_declares_all() -> None:
    for info in pkgutil.walk_packages(autonomic.__path__, "autonomic."):
        try:
            module = importlib.import_module(info.name)
        except MissingExtra:  # an adapter whose optional dependency is not installed
            continue
        assert hasattr(module, "__all__"), f"{info.name} has no __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"
