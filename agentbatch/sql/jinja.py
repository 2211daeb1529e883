"""The sandboxed Jinja environments.

Two modes share one set of helpers:
- `text` renders plain values in job files (`custom_inputs: {team: "{{ var('team') }}"}`).
- `sql` renders SQL: every `{{ ... }}` that is not a `Sql` fragment from the quoting layer becomes
  an inert string literal, so a variable can never inject SQL. Identifiers go through `ident()`.

Undefined names are errors; templates cannot reach Python internals (sandbox) nor read files outside
the template folders, nor environment variables the job did not declare in `env:`.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agentbatch.errors import TemplateError
from agentbatch.sql import quoting
from agentbatch.sql.quoting import Sql

Mode = Literal["text", "sql"]
BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# The largest string or list a template may build, and the largest exponent: no memory bombs.
MAX_SIZE = 1_000_000
MAX_EXPONENT = 256


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, also refusing `'x' * 10**10` and `9 ** 9 ** 9` before they exhaust memory."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise jinja2.exceptions.SecurityError(f"exponent larger than {MAX_EXPONENT}")
        if operator == "*":
            for sized, count in ((left, right), (right, left)):
                if (
                    isinstance(sized, (str, list, tuple))
                    and isinstance(count, int)
                    and len(sized) * count > MAX_SIZE
                ):
                    raise jinja2.exceptions.SecurityError(f"result larger than {MAX_SIZE:,} items")
        return super().call_binop(context, operator, left, right)


def _finalize_sql(value: Any) -> Any:
    if isinstance(value, Sql):
        return value
    if isinstance(value, jinja2.Undefined):
        return value
    return quoting.literal(value)


class Helpers:
    """Functions templates may call. `var` and `env` are bound to one job's values."""

    def __init__(self, variables: Mapping[str, Any], allowed_env: Iterable[str]) -> None:
        self._vars = dict(variables)
        self._allowed_env = frozenset(allowed_env)
        self.read: set[str] = set()  # the variables templates asked for

    def var(self, name: str, default: Any = jinja2.Undefined) -> Any:
        self.read.add(name)
        if name in self._vars:
            return self._vars[name]
        if default is not jinja2.Undefined:
            return default
        raise TemplateError(
            f"variable {name!r} is not set (set it in `vars:` or with --var {name}=...)"
        )

    def env(self, name: str, default: str | None = None) -> str:
        if name not in self._allowed_env:
            raise TemplateError(
                f"environment variable {name!r} is not declared in the job's `env:` list"
            )
        value = os.environ.get(name, default)
        if value is None:
            raise TemplateError(f"environment variable {name!r} is not set")
        return value

    def globals(self) -> dict[str, Callable[..., Any]]:
        return {
            "var": self.var,
            "env": self.env,
            "ident": quoting.identifier,
            "table": quoting.table,
            "literal": quoting.literal,
            "json_literal": quoting.json_literal,
            "sql_type": quoting.data_type,
        }


class _CompiledTemplates(jinja2.BytecodeCache):
    """Templates compiled once per process, for every environment of one mode (a run builds a
    plan more than once, each with its own environment). Jinja keys each entry by the template's
    name and file and checks its source's checksum, so an edited template is compiled again."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with self._lock:
            code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = bucket.bytecode_to_string()
        with self._lock:
            self._code[bucket.key] = code


# One cache a mode: the mode decides how templates compile (`finalize`).
_COMPILED: dict[str, _CompiledTemplates] = {
    "sql": _CompiledTemplates(),
    "text": _CompiledTemplates(),
}


def make_environment(
    mode: Mode,
    helpers: Helpers,
    template_dirs: Iterable[Path] = (),
) -> jinja2.Environment:
    # Project folders first, so a project template overrides a built-in one of the same name.
    loader = jinja2.ChoiceLoader(
        [
            jinja2.FileSystemLoader([str(d) for d in template_dirs]),
            jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES)),
        ]
    )
    env = _Sandbox(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize_sql if mode == "sql" else None,
        bytecode_cache=_COMPILED[mode],
    )
    env.globals.update(helpers.globals())
    return env


def render_string(
    env: jinja2.Environment, source: str, context: Mapping[str, Any], name: str
) -> str:
    """Render an inline template (a job-file value). Errors name `name` and the line inside it."""
    try:
        template = env.from_string(source)
        return template.render(context)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(
            f"{name}: template syntax error at line {err.lineno}: {err.message}"
        ) from None
    except TemplateError as err:
        raise TemplateError(f"{name}: {err}") from None
    except Exception as err:  # template code is the job author's: any failure is a template error
        raise TemplateError(f"{name}: {_describe(err)}") from None


def render_template(env: jinja2.Environment, template_name: str, context: Mapping[str, Any]) -> str:
    """Render a template file. Errors name the template and line."""
    try:
        return env.get_template(template_name).render(context)
    except jinja2.TemplateNotFound as err:
        missing = (
            f"template {err.name or template_name!r} not found in sqltemplates/ or the built-ins"
        )
        if err.name and err.name != template_name:  # an include or import inside the template
            line = _template_line(sys.exc_info()[2], template_name)
            raise TemplateError(f"{template_name}:{line}: {missing}") from None
        raise TemplateError(missing) from None
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(
            f"{err.filename or template_name}:{err.lineno}: template syntax error: {err.message}"
        ) from None
    except Exception as err:  # template code is the project's: any failure is a template error
        line = _template_line(sys.exc_info()[2], template_name)
        raise TemplateError(f"{template_name}:{line}: {_describe(err)}") from None


def _describe(err: BaseException) -> str:
    if isinstance(err, jinja2.exceptions.SecurityError):
        return f"not allowed in templates: {err}"
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if isinstance(err, (TemplateError, jinja2.UndefinedError)):
        return str(err)
    text = str(err).splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _template_line(tb: TracebackType | None, template_name: str) -> int | str:
    """Jinja rewrites tracebacks so template frames carry the template's file name and line."""
    line: int | str = "?"
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(template_name) or filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
