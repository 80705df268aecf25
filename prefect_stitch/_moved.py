"""Old import paths of modules that became internal, kept working for a while.

Version 0.3 made the package's internals private (``prefect_stitch.verdict`` is now
``prefect_stitch._verdict``, ...): the public API is what ``prefect_stitch`` exports.
Importing an old path still works, with a ``DeprecationWarning`` naming the new one.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

MOVED: dict[str, str] = {
    "prefect_stitch.verdict": "prefect_stitch._verdict",
    "prefect_stitch.logscan": "prefect_stitch._logscan",
    "prefect_stitch.lineage": "prefect_stitch._lineage",
    "prefect_stitch.ratelimit": "prefect_stitch._ratelimit",
    "prefect_stitch.loads": "prefect_stitch._engine.loads",
    "prefect_stitch.reporting": "prefect_stitch._engine.outcomes",
    "prefect_stitch.poller": "prefect_stitch._poll.poller",
    "prefect_stitch.sharing": "prefect_stitch._poll.sharing",
    "prefect_stitch.shared_listing": "prefect_stitch._poll.listing",
}
"""Each old module path, and the internal module that holds its code now."""

RENAMED: dict[str, dict[str, tuple[str, str]]] = {
    "prefect_stitch.verdict": {"ExtractionState": ("prefect_stitch.models", "SyncStatus")},
    "prefect_stitch.flows": {
        "load_credentials": ("prefect_stitch._engine.runner", "load_credentials"),
        "run_cancellable": ("prefect_stitch._engine.runner", "run_cancellable"),
    },
    "prefect_stitch.tasks": {
        "DEFAULT_LOG_TAIL_LINES": ("prefect_stitch.options", "DEFAULT_LOG_TAIL_LINES"),
        "DEFAULT_MAX_LOAD_WAIT_SECONDS": (
            "prefect_stitch.options",
            "DEFAULT_MAX_LOAD_WAIT_SECONDS",
        ),
    },
}
"""Names that moved or were renamed, by the module they were imported from."""


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated: use {new}. The old name will be removed in a later version.",
        DeprecationWarning,
        stacklevel=3,
    )


def module_getattr(module: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` that finds a moved or renamed name, with a warning.

    Args:
        module: The module whose old names it resolves.

    Returns:
        The function (assign it to the module's ``__getattr__``).
    """

    def find(name: str) -> Any:
        moved = RENAMED.get(module, {}).get(name)
        if moved is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        _warn(f"{module}.{name}", f"{moved[0]}.{moved[1]}")
        return getattr(importlib.import_module(moved[0]), moved[1])

    return find


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve an old module path to its new module, with a deprecation warning."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """A stand-in for the old module that forwards every name to the new one."""
        new = importlib.import_module(MOVED[spec.name])
        warnings.warn(
            f"{spec.name} is internal now ({new.__name__}); import what you need from "
            "prefect_stitch instead. The old path will be removed in a later version.",
            DeprecationWarning,
            stacklevel=2,
        )
        proxy = ModuleType(spec.name, new.__doc__)
        renamed = module_getattr(spec.name)

        def forward(name: str) -> Any:
            if name in RENAMED.get(spec.name, {}):
                return renamed(name)
            return getattr(new, name)

        proxy.__getattr__ = forward  # type: ignore[method-assign]
        return proxy

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported under its new name."""


def install() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
