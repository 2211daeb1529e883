"""Custom scorers: plain Python functions named by import path (`package.module:function`).

A scorer function is called once per row as `function(response, expected, row)`:
`response` is the answer (a str, or a dict for structured answers; None when the agent failed),
`expected` the expected value (None without one) and `row` a dict of the output row. It returns
a number or a bool (True = 1.0); None means "not applicable to this row". An exception is recorded
as that row's scorer error, never raised.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from typing import Any

ScorerFunction = Callable[[Any, Any, dict[str, Any]], Any]
_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def load_function(path: str) -> ScorerFunction:
    """Import `module:function` (the working folder is searched too); ValueError if unusable."""
    if not _PATH.match(path):
        raise ValueError(f"{path!r}: name a function as `package.module:function`")
    module_name, _, attribute = path.partition(":")
    module = _import(module_name)
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{path!r}: {module_name} has no attribute {part!r}") from None
    if not callable(target):
        raise ValueError(f"{path!r}: not a function")
    try:
        inspect.signature(target).bind(None, None, {})
    except TypeError:
        raise ValueError(
            f"{path!r}: a scorer function takes three arguments: (response, expected, row)"
        ) from None
    except ValueError:
        pass  # builtins without a signature: trust them
    function: ScorerFunction = target
    return function


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not module_name.startswith(err.name):
            raise ValueError(f"importing {module_name!r} failed: {err}") from None
    except Exception as err:
        raise ValueError(f"importing {module_name!r} failed: {type(err).__name__}: {err}") from None
    # Scorer modules usually live in the project folder, which a console script does not search.
    folder = os.getcwd()
    if folder in sys.path:
        raise ValueError(f"no module named {module_name!r}")
    sys.path.append(folder)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise ValueError(f"no module named {module_name!r}") from None
    except Exception as err:
        raise ValueError(f"importing {module_name!r} failed: {type(err).__name__}: {err}") from None
    finally:
        sys.path.remove(folder)
