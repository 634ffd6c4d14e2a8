"""Stable names for architectures (CompressAI's `register_model`, without its other registries)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_ARCHITECTURES: dict[str, type] = {}


def register(name: str) -> Callable[[type[T]], type[T]]:
    def wrap(cls: type[T]) -> type[T]:
        _ARCHITECTURES[name] = cls
        return cls

    return wrap


def get_architecture(name: str) -> type:
    _import_all()
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(available())}") from None


def available() -> list[str]:
    _import_all()
    return sorted(_ARCHITECTURES)


def _import_all() -> None:
    # Importing the modules runs their @register decorators.
    import importlib
    import pkgutil

    import training.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in {"base", "registry"}:
            importlib.import_module(f"training.models.{info.name}")
