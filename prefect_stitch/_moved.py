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
from types import ModuleType

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


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve an old module path to its new module, with a deprecation warning."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} is internal now ({new}); import what you need from "
            "prefect_stitch instead. The old path will be removed in a later version.",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported under its new name."""


def install() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
