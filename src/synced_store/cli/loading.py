"""Loading user code named on the command line (``MODULE:ATTR``) and the CLI's error type."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from ..schema import BackendConfig

__all__ = ["CliError", "load_backend", "load_object"]


class CliError(click.ClickException):
    """A user error: printed as ``Error: <message>`` with exit status 1, no traceback."""


def _module_name_for_path(path: Path) -> tuple[str, Path]:
    """The dotted module name of a ``.py`` file or package directory, and the directory that
    must be on ``sys.path`` to import it under that name.

    Under the current directory the name is relative to it (``examples/todo/app.py`` ->
    ``examples.todo.app``, so relative imports work). Elsewhere the name is found by walking up
    through directories that contain ``__init__.py``.
    """
    path = path.resolve()
    target = path.with_suffix("") if path.suffix == ".py" else path
    if target.name == "__init__" and path.suffix == ".py":
        target = target.parent
    cwd = Path.cwd().resolve()
    with contextlib.suppress(ValueError):
        parts = target.relative_to(cwd).parts
        if parts and all(p.isidentifier() for p in parts):
            return ".".join(parts), cwd
    parts_rev = [target.name]
    root = target.parent
    while (root / "__init__.py").is_file() and root.name.isidentifier():
        parts_rev.append(root.name)
        root = root.parent
    return ".".join(reversed(parts_rev)), root


def load_object(spec: str, *, what: str = "object") -> Any:
    """Import ``MODULE:ATTR`` and return the attribute.

    ``MODULE`` is a dotted module name (importable from the current directory), a path to a
    ``.py`` file, or a path to a package directory. ``ATTR`` may be dotted (``mod:obj.attr``).
    Raises :class:`CliError` with a one-line explanation on any failure.
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise CliError(
            f"{what} must be given as MODULE:ATTR (for example examples.todo:backend), got {spec!r}"
        )
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # like `python -m`: modules in the current directory are importable
        sys.path.insert(0, cwd)
    candidate = Path(module_part)
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        if not candidate.exists():
            raise CliError(f"no such file or directory: {module_part}")
        if candidate.is_dir() and not (candidate / "__init__.py").is_file():
            raise CliError(f"directory {module_part} is not a Python package (no __init__.py)")
        module_name, root = _module_name_for_path(candidate)
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    else:
        module_name = module_part
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise CliError(
                f"could not import {module_name!r}: no module named {exc.name!r} "
                f"(run from the directory that contains it, or pass a file path)"
            ) from None
        raise CliError(f"importing {module_name!r} failed: {_describe(exc)}") from None
    except Exception as exc:  # the user's module raised while importing
        raise CliError(f"importing {module_name!r} failed: {_describe(exc)}") from None
    obj: Any = module
    for name in attr.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _describe(exc: BaseException) -> str:
    """``Type: message (file:line)`` of an exception raised by user code."""
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}:{exc.lineno})"
    elif tb is not None:
        where = f" ({tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
    return f"{type(exc).__name__}: {exc}{where}"


def load_backend(spec: str) -> BackendConfig:
    """Import ``MODULE:ATTR`` and check that it is a :class:`BackendConfig`."""
    backend = load_object(spec, what="the backend")
    if not isinstance(backend, BackendConfig):
        raise CliError(
            f"{spec} is a {type(backend).__name__}, not a BackendConfig "
            "(build it with synced_store.define_backend_config)"
        )
    return backend
