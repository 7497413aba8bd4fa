"""Plug-ins: code of your own that registers methods, datasets and FLOP counters.

A plug-in is a Python module whose import (or whose entry-point function) calls the package's
registration functions - ``sg.registry.register(MethodSpec(...))``, ``sg.data.register(name,
loader)``, ``sg.flops.register_counter(layer_type, counter)`` - so the names it adds are valid
``--method`` / ``--dataset`` values and its layers are counted. Two ways to bring one in:

* ``--import=MODULE`` on every experiment script (``link_pred.py``, ``node_class.py``,
  ``sweep.py``, ``report.py``), repeatable: a module name (imported as ``import MODULE`` would,
  from the installed packages or the current folder) or the path of a ``.py`` file. From
  Python: :func:`import_module`.
* An installed package that declares an entry point in the group ``sparsegnn_jax.plugins``
  (:data:`ENTRY_POINT_GROUP`), e.g. in its ``pyproject.toml``::

      [project.entry-points."sparsegnn_jax.plugins"]
      mine = "my_package.sparsegnn_plugin"            # a module: importing it registers
      other = "my_package.plugin:register"            # a function: called with no arguments

  The scripts load every such plug-in once, when they start; from Python call
  :func:`load`. ``SPARSEGNN_DISABLE_PLUGINS=1`` in the environment skips them.

A plug-in that fails raises :class:`PluginError`, whose one-line message names the plug-in
(or module) and the cause; the scripts print it as their ``error:`` line (exit code 2).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import pathlib
import sys
import traceback
import types
from typing import Sequence

__all__ = [
    "DISABLE_VARIABLE", "ENTRY_POINT_GROUP", "PluginError", "add_import_flag",
    "import_module", "import_modules", "imports_in", "load", "start",
]

#: The entry-point group installed packages declare to be loaded as plug-ins.
ENTRY_POINT_GROUP = "sparsegnn_jax.plugins"
#: Set to a non-empty value other than ``0`` to skip the installed plug-ins.
DISABLE_VARIABLE = "SPARSEGNN_DISABLE_PLUGINS"

# Entry points loaded so far, by name, so each runs once per process whoever asks.
_LOADED: dict[str, object] = {}
# Modules imported from a file path, by resolved path: a second --import of the same file
# must not register its methods again (register refuses a taken name).
_FILE_MODULES: dict[pathlib.Path, types.ModuleType] = {}


class PluginError(ImportError):
    """A plug-in or ``--import`` module failed; the message is one line naming it."""


def _cause(err: BaseException, origin: str | None = None) -> str:
    """``Type: message`` of an error, with the innermost line of ``origin`` that raised it."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    # Where in the plug-in's own file it failed, not deep inside a library it called.
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if origin is not None and pathlib.Path(f.filename).resolve() == origin]
    if frames and not isinstance(err, SyntaxError):  # a SyntaxError names its line itself
        text += f" ({pathlib.Path(frames[-1].filename).name}, line {frames[-1].lineno})"
    return text


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or (os.altsep or os.sep) in spec


def import_module(spec: str) -> types.ModuleType:
    """Imports a plug-in module by name or from a ``.py`` file; returns the module.

    Importing twice gives the module imported the first time (nothing runs again).

    Args:
      spec: a module name (``my_extension``, ``my_package.plugin``), imported as ``import``
        would with the current folder also searched (after the installed packages), or the
        path of a ``.py`` file, imported as a module named after the file (``my_extension``
        for ``examples/my_extension.py``).

    Raises:
      PluginError: the module is not found or its code raised; the message names ``spec``,
        the error and the line of the module that raised it.
    """
    if _is_path(spec):
        return _import_file(spec)
    cwd = os.getcwd()
    # `python experiments/x.py` puts experiments/, not the current folder, on the path; a
    # module next to the user should be found as `python -m` would find it.
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(spec)
    except Exception as err:
        if isinstance(err, ModuleNotFoundError) and err.name == spec:
            raise PluginError(f"--import={spec}: no module named {spec!r} (give an importable "
                              "module name or the path of a .py file)") from None
        origin = _origin(spec)
        raise PluginError(f"--import={spec} failed: {_cause(err, origin)}") from None


def _origin(name: str) -> pathlib.Path | None:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if path is None:
        try:
            found = importlib.util.find_spec(name)
        except Exception:
            return None
        path = getattr(found, "origin", None)
    return pathlib.Path(path).resolve() if path else None


def _import_file(spec: str) -> types.ModuleType:
    path = pathlib.Path(spec).expanduser().resolve()
    if path in _FILE_MODULES:
        return _FILE_MODULES[path]
    if not path.is_file():
        raise PluginError(f"--import={spec}: no such file")
    if path.suffix != ".py":
        raise PluginError(f"--import={spec}: a path must name a .py file")
    name = path.stem
    taken = sys.modules.get(name)
    if taken is not None and getattr(taken, "__file__", None) != str(path):
        raise PluginError(f"--import={spec}: a module named {name!r} is already imported "
                          f"(from {getattr(taken, '__file__', 'a built-in')}); rename the file")
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    # In sys.modules while it runs, as a normal import: dataclasses and pickling look it up.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise PluginError(f"--import={spec} failed: {_cause(err, path)}") from None
    _FILE_MODULES[path] = module
    return module


def import_modules(specs: Sequence[str]) -> list[types.ModuleType]:
    """:func:`import_module` of each of ``specs``, in order."""
    return [import_module(s) for s in specs]


def _disabled() -> bool:
    return os.environ.get(DISABLE_VARIABLE, "") not in ("", "0")


def load() -> list[str]:
    """Loads the installed plug-ins (entry-point group :data:`ENTRY_POINT_GROUP`), once.

    An entry point naming a module is imported; one naming a function (``module:function``)
    is imported and the function called with no arguments. Plug-ins already loaded by an
    earlier call are not loaded again. Nothing is loaded when ``SPARSEGNN_DISABLE_PLUGINS``
    is set (to anything but ``0``).

    Returns:
      The names of the plug-ins loaded so far in this process.

    Raises:
      PluginError: a plug-in failed to load; the message names it, its distribution and the
        error. The plug-ins before it stay loaded; a later call tries it again.
    """
    if _disabled():
        return list(_LOADED)
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda e: e.name):
        if ep.name in _LOADED:
            continue
        try:
            obj = ep.load()
            if not isinstance(obj, types.ModuleType):
                if not callable(obj):
                    raise TypeError(f"{ep.value} is neither a module nor a function")
                obj()
        except Exception as err:
            dist = getattr(ep, "dist", None)
            source = f" of {dist.name} {dist.version}" if dist is not None else ""
            raise PluginError(
                f"plug-in {ep.name!r} ({ep.value}{source}) failed to load: "
                f"{_cause(err, _origin(ep.module))}; "
                f"uninstall it or set {DISABLE_VARIABLE}=1 to skip installed plug-ins"
            ) from None
        _LOADED[ep.name] = obj
    return list(_LOADED)


def add_import_flag(parser: argparse.ArgumentParser) -> None:
    """Adds ``--import=MODULE`` (repeatable) to a script's parser (for ``--help`` and so the
    full parse accepts it; :func:`start` acts on it before that parse)."""
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="a module of your own to import first (repeatable): a module name (from the "
             "installed packages or the current folder) or the path of a .py file; the "
             "methods and datasets it registers are then valid --method / --dataset values, "
             "its FLOP counters count its layers. Installed plug-ins (entry points of the "
             f"group {ENTRY_POINT_GROUP}) are loaded always, unless {DISABLE_VARIABLE}=1")


def imports_in(argv: Sequence[str]) -> list[str]:
    """The ``--import`` values of a command line, read before its full parser exists."""
    pre = argparse.ArgumentParser(add_help=False)
    add_import_flag(pre)
    return pre.parse_known_args(list(argv))[0].imports


def start(argv: Sequence[str] | None = None) -> str | None:
    """What a script does first: loads the installed plug-ins, then its ``--import`` modules.

    Args:
      argv: the script's arguments (default ``sys.argv[1:]``).

    Returns:
      None when everything loaded, else the error message (one line) to print.
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        load()
        import_modules(imports_in(argv))
    except PluginError as err:
        return str(err)
    return None
