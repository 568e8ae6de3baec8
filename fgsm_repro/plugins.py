"""Modules found by name: the project's own by naming convention, a user's by module path.

A built-in attack or experiment is the module ``fgsm_repro.<package>.<name>`` (big_vision's
convention: the name is the file). Anything else is a user's module, named as Python imports it
(``my_attacks`` or ``mypkg.attacks``), looked up in the given folders (a config's own folder),
the current folder, then ``sys.path`` — so a module beside its YAML needs no installation.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from fgsm_repro.errors import ReproError


def built_in_names(package: str, exclude: Iterable[str] = ()) -> list[str]:
    """The module names of `package` (e.g. ``fgsm_repro.attacks``) except `exclude`, sorted."""
    path = importlib.import_module(package).__path__
    return sorted(m.name for m in pkgutil.iter_modules(path) if m.name not in set(exclude)
                  and not m.name.startswith("_"))


def import_module(name: str, folders: Iterable[Path | str] = ()) -> ModuleType:
    """Import `name`, searching `folders` and the current folder before ``sys.path``.

    Raises ModuleNotFoundError when `name` itself is not found (a module it imports that is
    missing is re-raised as a ReproError naming both)."""
    if name in sys.modules:
        return sys.modules[name]
    extra = [str(Path(f).resolve()) for f in (*folders, Path.cwd())]
    added = [p for p in dict.fromkeys(extra) if p not in sys.path]
    sys.path[:0] = added
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and name != e.name and not name.startswith(e.name + "."):
            raise ReproError(f"module {name!r} imports {e.name!r}, which is not installed") from None
        raise
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


def is_module(name: str) -> bool:
    """Whether `name` could be a module path (``a.b_c``)."""
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
