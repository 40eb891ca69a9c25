"""Name -> implementation registries, one per extension point (tasks, stages, store
backends, pitch-shift backends).

An implementation registers itself with a decorator where it is defined, the way
lhotse registers feature extractors and jams its namespace converters::

    @TASKS.register
    class MyTask(Task):
        name = "mytask"

A registry knows the modules that hold the built-in implementations and imports
them on first use (so importing a registry stays cheap), then the modules named
by the ``mirpipe.<kind>`` entry-point group of installed packages. Configuration
validates names against a registry, so an unknown name lists what exists.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from .errors import ConfigurationError

T = TypeVar("T")


class UnknownNameError(ConfigurationError, KeyError):
    """A name that no implementation registered; the message lists the names that exist.
    A configuration error (the name comes from pipeline.yaml or the command line), and a
    ``KeyError`` and ``ValueError`` for the callers that catch those."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Implementations by name, in registration order.

    ``instantiate``: registering a class stores one instance of it (tasks, stages);
    otherwise the object itself (backend classes, functions).
    """

    def __init__(self, kind: str, builtin: Sequence[str] = (), entry_points: str | None = None, instantiate: bool = False):
        self.kind = kind
        self.builtin = tuple(builtin)
        self.entry_points = entry_points
        self.instantiate = instantiate
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, obj=None, *, name: str | None = None):
        """Decorator (bare or with ``name=``); the name defaults to the object's ``name`` attribute."""

        def add(target):
            key = name or getattr(target, "name", None)
            if not isinstance(key, str) or not key:
                raise TypeError(f"a {self.kind} needs a name: set a 'name' attribute or register(name=...)")
            value = target() if self.instantiate and isinstance(target, type) else target
            previous = self._items.get(key)
            if previous is not None and _origin(previous) != _origin(value):
                raise ConfigurationError(f"{self.kind} {key!r} is already registered by {_origin(previous)}")
            self._items[key] = value
            return target

        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first: the modules below register into this registry while importing
        for module in self.builtin:
            importlib.import_module(module)
        if self.entry_points:
            from importlib.metadata import entry_points

            for ep in entry_points(group=self.entry_points):
                ep.load()

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; {self.kind}s are: {', '.join(self.names())}") from None

    __getitem__ = get

    def names(self) -> list[str]:
        """The registered names: the built-in modules' in the order ``builtin`` lists them, then the
        others in registration order (whatever order a process happened to import the modules in)."""
        self._load()
        rank = {module: i for i, module in enumerate(self.builtin)}
        position = {name: i for i, name in enumerate(self._items)}

        def key(name: str) -> tuple[int, int]:
            module = _origin(self._items[name]).rpartition(".")[0]
            while module and module not in rank:  # a nested qualname: Outer.Inner
                module = module.rpartition(".")[0]
            return (rank.get(module, len(rank)), position[name])

        return sorted(self._items, key=key)

    def values(self) -> list[T]:
        return [self._items[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def check(self, name: str) -> str:
        """``name`` when registered, else a ValueError listing the registered names (for validators)."""
        self.get(name)
        return name


def _origin(obj) -> str:
    """Where an implementation is defined (a module re-imported under the same name registers again)."""
    target = obj if isinstance(obj, type) or inspect.isfunction(obj) else type(obj)
    return f"{target.__module__}.{target.__qualname__}"


def import_plugins(modules: Sequence[str]) -> None:
    """Import modules that register tasks, stages or backends (``plugins:`` in pipeline.yaml)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"plugin module {module!r} cannot be imported: {exc}") from None
