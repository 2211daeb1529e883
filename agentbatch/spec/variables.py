"""Job variables given from outside (`--var`, `vars=`): each must be one the job uses.

A misspelt `--var tema=billing` would otherwise run the job with its default `team` and write
every row as if the run were right. A loaded job's values already hold the variables they read,
so giving such a variable a new value to the loaded job (not its file) is refused too.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes

from agentbatch.errors import UsageError
from agentbatch.spec.models import Job, VariableUse


def use_of(job: Job) -> VariableUse:
    """A job built in Python declares all its `vars` and read none at load."""
    found = job._variables  # set by the loader, kept by model_copy
    return found if found is not None else VariableUse(frozenset(job.vars), frozenset())


def with_given(job: Job, given: Mapping[str, Any]) -> Job:
    """The loaded `job` with `given` variables set; refused for a value its values already read."""
    use = use_of(job)
    stale = sorted(n for n in given if n in use.read and job.vars.get(n) != given[n])
    if stale:
        raise UsageError(
            f"variable {stale[0]!r} was read by the job's values when it was loaded: pass the "
            f"job file's path with the variable, or load it with load_job(path, vars=...)"
        )
    updated = job.model_copy(update={"vars": {**job.vars, **given}})
    updated._variables = VariableUse(use.declared, use.read, use.given | frozenset(given))
    return updated


def check_given(jobs: Sequence[Job], template_dirs: Iterable[Path]) -> None:
    """Refuse a variable given from outside that no job of `jobs` declares or reads.

    Reads are those of the job files' values and of the project's SQL templates; a template
    that names a variable by an expression (`var(name)`) could read any, so nothing is refused."""
    given = set().union(*(use_of(job).given for job in jobs))
    if not given:
        return
    from_templates = templates_read(template_dirs)
    if from_templates is None:
        return
    known = set().union(*(names_used(job, from_templates) for job in jobs))
    unknown = sorted(given - known)
    if unknown:
        raise unknown_variable(unknown[0], known)


def unknown_variable(name: str, known: set[str], *, files: bool = False) -> UsageError:
    """The error for a variable given that nothing uses (`files`: several job files checked)."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(sorted(known)) or "none"
    unused = (
        "no job file declares it in `vars:` or reads it with var()"
        if files
        else "the job neither declares it in `vars:` nor reads it with var()"
    )
    return UsageError(f"variable {name!r} is given but {unused} (variables: {listed}){hint}")


def names_used(job: Job, from_templates: set[str]) -> set[str]:
    """The variables `job` declares or reads, its project's templates reading `from_templates`."""
    use = use_of(job)
    return from_templates | use.declared | use.read


def templates_read(template_dirs: Iterable[Path]) -> set[str] | None:
    """Names the templates in `template_dirs` read with var('name'); None if one reads a name
    it computes. A template that does not parse is left to the render, which names its error."""
    env = jinja2.Environment()
    names: set[str] = set()
    for folder in template_dirs:
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                tree = env.parse(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, jinja2.TemplateSyntaxError):
                continue
            for call in tree.find_all(nodes.Call):
                if not (isinstance(call.node, nodes.Name) and call.node.name == "var"):
                    continue
                if not (call.args and isinstance(call.args[0], nodes.Const)):
                    return None
                names.add(str(call.args[0].value))
    return names
