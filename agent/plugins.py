"""Registries of plugins (sensors, grid providers, sinks): a name, a factory, a config section.

A plugin module registers itself when it is imported::

    PLUGIN = SENSORS.register("rapl", open_rapl, section=RaplConfig, validate=_validate)

Its config section (a frozen dataclass) becomes the table ``[sensors.rapl]`` of the
family's composed config section (``Registry.compose``), its ``validate`` runs with
the rest of the config's checks, and its factory builds it. ``Registry.load`` imports
every module of the family's package once, so adding a plugin is adding a module.
Plugin modules are therefore imported while ``agent.config`` is being built: they import
``ConfigError`` from ``agent.config_check``, the ``Config`` types only for type checking,
and their optional heavy dependencies (pynvml, influxdb-client) only in their factory.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, make_dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

F = TypeVar("F")
T = TypeVar("T")


@dataclass(frozen=True)
class Plugin(Generic[F]):
    """One registered plugin; ``order`` sorts a family (then the name)."""

    name: str
    factory: F
    section: type[Any] | None = None  # decoded from the table named after the plugin
    validate: Callable[[Any], None] | None = None  # gets the family's section; ConfigError
    order: int = 50


class Sections:
    """Base of a config section that holds one sub-section per plugin (``Registry.compose``).

    The shipped plugins' sub-sections are declared for type checkers in the composed
    class (``if TYPE_CHECKING: rapl: RaplConfig = ...``); a plugin not declared there is
    ``Any`` outside its own module, which reads it with its own type.
    """

    if TYPE_CHECKING:

        def __init__(self, **values: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...


class Registry(Generic[F]):
    """The plugins of one family, found by importing every module of ``package``."""

    def __init__(self, family: str, package: str) -> None:
        self.family = family
        self.package = package
        self._plugins: dict[str, Plugin[F]] = {}
        self._loaded = False

    def register(
        self,
        name: str,
        factory: F,
        *,
        section: type[Any] | None = None,
        validate: Callable[[Any], None] | None = None,
        order: int = 50,
    ) -> Plugin[F]:
        """Add a plugin; a second plugin of the same name is a programming error."""
        if name in self._plugins:
            raise ValueError(f"{self.family}: a plugin named {name!r} is already registered")
        plugin = Plugin(name, factory, section, validate, order)
        self._plugins[name] = plugin
        return plugin

    def load(self) -> None:
        """Import every module of the family's package once (each registers itself)."""
        if self._loaded:
            return
        self._loaded = True
        root = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(root.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")

    def __iter__(self) -> Iterator[Plugin[F]]:
        self.load()
        return iter(sorted(self._plugins.values(), key=lambda p: (p.order, p.name)))

    def names(self) -> tuple[str, ...]:
        """Every plugin's name, in the family's order."""
        return tuple(p.name for p in self)

    def get(self, name: str) -> Plugin[F]:
        """The plugin called ``name``; ``KeyError`` if there is none."""
        self.load()
        return self._plugins[name]

    def compose(self, base: type[T]) -> type[T]:
        """``base`` (a frozen dataclass) with one field per plugin section, defaulted.

        The new class keeps ``base``'s name and module, so it prints, compares and
        pickles as the class it replaces.
        """
        taken = {f.name for f in fields(base)}  # type: ignore[arg-type]
        extra: list[tuple[str, type[Any], Any]] = []
        for plugin in self:
            if plugin.section is None:
                continue
            if plugin.name in taken:
                raise ValueError(f"{self.family}: plugin {plugin.name!r} shadows a config key")
            extra.append((plugin.name, plugin.section, field(default_factory=plugin.section)))
        cls = make_dataclass(base.__name__, extra, bases=(base,), frozen=True)
        cls.__module__ = base.__module__
        cls.__qualname__ = base.__qualname__
        cls.__doc__ = base.__doc__
        return cls

    def validate(self, section: Any) -> None:
        """Run every plugin's check on the family's composed ``section``."""
        for plugin in self:
            if plugin.validate is not None:
                plugin.validate(section)
