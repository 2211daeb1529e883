"""YAML with positions: load a document into plain Python values plus the line of every key path,
and refuse duplicate keys (PyYAML silently keeps the last one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from agentbatch.errors import SpecError

KeyPath = tuple[str | int, ...]


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
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        raise SpecError(f"{file}:{line}: invalid YAML: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{file}:1: invalid YAML: {err}") from None
    if node is None:
        raise SpecError(f"{file}:1: the file is empty")
    lines: dict[KeyPath, int] = {}
    value = _convert(node, (), lines, file)
    return YamlDocument(value=value, file=file, lines=lines)


def _convert(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
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
            result[key] = _convert(value_node, child, lines, file)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), lines, file) for i, item in enumerate(node.value)]
    return _scalar(node, file)


def _scalar(node: yaml.Node, file: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise SpecError(f"{file}:{node.start_mark.line + 1}: keys must be plain scalars")
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as err:
        raise SpecError(f"{file}:{node.start_mark.line + 1}: invalid YAML value: {err}") from None
    finally:
        loader.dispose()


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
