"""YAML with positions: load a document into plain Python values plus the line of every key path,
and refuse duplicate keys (PyYAML silently keeps the last one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from agentbatch.errors import SpecError

KeyPath = tuple[str | int, ...]

# A job file is small: these bounds stop alias bombs and pathological nesting early.
MAX_VALUES = 100_000
MAX_DEPTH = 64


@dataclass(frozen=True)
class YamlDocument:
    value: Any
    file: str
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int:
        """The line of the deepest known node on `path` (1-based)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1

    def where(self, path: KeyPath) -> str:
        return f"{self.file}:{self.line_of(path)}"


def load_yaml(text: str, file: str) -> YamlDocument:
    last_line = text.count("\n") + 1
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = min(mark.line + 1, last_line) if mark else 1
        problem = err.problem or err.context or "not valid YAML"
        raise SpecError(f"{file}:{line}: invalid YAML: {printable(problem)}") from None
    except yaml.reader.ReaderError as err:
        line = text[: err.position].count("\n") + 1
        raise SpecError(
            f"{file}:{line}: invalid YAML: character {printable(chr(err.character)) if isinstance(err.character, int) else '?'} "
            "is not allowed"
        ) from None
    except yaml.YAMLError as err:
        raise SpecError(f"{file}:1: invalid YAML: {printable(str(err).splitlines()[0])}") from None
    except RecursionError:
        raise SpecError(f"{file}:1: invalid YAML: nested too deeply") from None
    if node is None:
        raise SpecError(f"{file}:1: the file is empty")
    lines: dict[KeyPath, int] = {}
    budget = [MAX_VALUES]
    value = _convert(node, (), lines, file, (), budget)
    return YamlDocument(value=value, file=file, lines=lines)


def _convert(
    node: yaml.Node,
    path: KeyPath,
    lines: dict[KeyPath, int],
    file: str,
    ancestors: tuple[int, ...],
    budget: list[int],
) -> Any:
    line = node.start_mark.line + 1
    lines.setdefault(path, line)
    budget[0] -= 1
    if budget[0] < 0:
        raise SpecError(
            f"{file}:{line}: too many values (aliases expand to more than {MAX_VALUES})"
        )
    if id(node) in ancestors:
        raise SpecError(f"{file}:{line}: {dotted(path)}: an alias refers to itself")
    if len(ancestors) >= MAX_DEPTH:
        raise SpecError(f"{file}:{line}: {dotted(path)}: nested more than {MAX_DEPTH} levels deep")
    inside = (*ancestors, id(node))
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError(
                    f"{file}:{key_node.start_mark.line + 1}: YAML merge keys are not supported"
                )
            key = _scalar(key_node, file)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            if key in result:
                raise SpecError(
                    f"{file}:{key_node.start_mark.line + 1}: {dotted(child)}: duplicate key "
                    f"(first at line {lines[child]})"
                )
            lines[child] = key_node.start_mark.line + 1
            result[key] = _convert(value_node, child, lines, file, inside, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(item, (*path, i), lines, file, inside, budget)
            for i, item in enumerate(node.value)
        ]
    return _scalar(node, file)


def _scalar(node: yaml.Node, file: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise SpecError(f"{file}:{node.start_mark.line + 1}: keys must be plain scalars")
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    # PyYAML's scalar constructors raise arbitrary Python errors on odd scalars (`!!int _`,
    # `!!timestamp ''`): each is this value's problem, never a crash.
    except Exception as err:
        detail = getattr(err, "problem", None) or type(err).__name__
        raise SpecError(
            f"{file}:{node.start_mark.line + 1}: invalid YAML value: {printable(str(detail))}"
        ) from None
    finally:
        loader.dispose()


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = printable(part)
            out += f".{name}" if out else name
    return out or "(top level)"


def printable(text: str) -> str:
    """`text` on one line, with control and line-breaking characters escaped (keys may hold any)."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
