"""The public surface: everything in __all__ exists and nothing public is left out."""

from __future__ import annotations

import importlib
import pkgutil

import autonomic


def test_all_names_are_importable() -> None:
    for name in autonomic.__all__:
        assert hasattr(autonomic, name), name


def test_every_module_declares_all() -> None:
    for info in pkgutil.walk_packages(autonomic.__path__, "autonomic."):
        module = importlib.import_module(info.name)
        if info.name.endswith("__main__"):
            continue
        assert hasattr(module, "__all__"), f"{info.name} has no __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"
