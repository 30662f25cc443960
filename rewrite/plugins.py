"""Users' Python modules loaded as plugins (``--intrinsics-file``, ``--rules-file``): trusted
code, imported as any module is, under a name of its own in ``sys.modules``
(``<prefix>_<n>_<stem>``), so that its classes and functions have a source file. Whatever the
module raises -- ``SystemExit`` and ``KeyboardInterrupt`` included -- becomes one line naming
the file and, where known, the line::

    mine.py:4:2: Python syntax error: invalid syntax
    mine.py:7:1: cannot load rules: boom (RuntimeError)
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import sys
import traceback
from typing import Callable, Optional

_counter = itertools.count(1)


class PluginError(Exception):
    """A plugin module that could not be loaded: the one line that says where and why."""


Explain = Callable[[BaseException, str], Optional[str]]


def load(path: str, prefix: str, what: str, undo: Callable[[], None],
         explain: Optional[Explain] = None) -> object:
    """Import the module at ``path`` and return it. On failure ``undo()`` removes what it
    registered, the module leaves ``sys.modules``, and ``PluginError`` says why (``what``:
    ``"intrinsics"``, ``"rules"``). ``explain(e, where)`` words the caller's own errors
    (``where``: the file and line), or returns None for the general wording."""
    if not os.path.isfile(path):
        raise PluginError(f"{path}: no such file")
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0], flags=re.ASCII)
    module_name = f"{prefix}_{next(_counter)}_{stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{path}: not a Python module (a .py file is expected)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # plugin code: anything it raises is bad input
        undo()  # all or nothing: a module that fails half way leaves nothing behind
        sys.modules.pop(module_name, None)
        raise PluginError(failure(path, e, what, explain)) from None
    return module


def failure(path: str, e: BaseException, what: str, explain: Optional[Explain] = None) -> str:
    """One line for what a plugin raised while loading, located where Python says."""
    if isinstance(e, SyntaxError):
        file = e.filename or path
        where = f"{file}:{e.lineno or 1}:{e.offset or 1}"
        also = "" if _same_file(file, path) else f" (imported by {path})"
        return f"{where}: Python syntax error: {e.msg}{also}"
    frames = [f for f in traceback.extract_tb(e.__traceback__) if _same_file(f.filename, path)]
    where = path
    if frames:
        where += f":{frames[-1].lineno}"
        if getattr(frames[-1], "colno", None) is not None:
            where += f":{frames[-1].colno + 1}"
    said = explain(e, where) if explain is not None else None
    if said is not None:
        return said
    if isinstance(e, SystemExit):
        return f"{where}: cannot load {what}: the module called sys.exit({e.code!r})"
    message = str(e).replace("\n", " ").strip()
    text = f"{message} ({type(e).__name__})" if message else f"{type(e).__name__} raised"
    return f"{where}: cannot load {what}: {text}"


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False

