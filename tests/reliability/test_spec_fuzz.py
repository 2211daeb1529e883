"""Hostile and odd job files: never a traceback, always a SpecError naming `<file>:<line>:`."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentbatch.spec.models import Job

from .spec_cases import BASE, base, check_contract, dump, load_in_child, string_paths

# One bug per test is reported (shrinking several at once takes minutes).
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
    report_multiple_bugs=False,
)

# Pieces of YAML syntax (and of Jinja) that together make plausible, often broken, documents.
YAML_TOKENS = [
    "name:",
    "source:",
    "agent:",
    "output:",
    "request:",
    "vars:",
    "env:",
    "key:",
    "table:",
    "endpoint:",
    "columns:",
    "where:",
    "mode:",
    " ",
    "  ",
    "\n",
    "\n  ",
    "\n    ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    ": ",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!!str ",
    "!!int ",
    "!!binary ",
    "!!python/object/apply:os.system ",
    "!!set ",
    "!!timestamp ",
    "'",
    '"',
    "\\",
    "#",
    "|",
    ">",
    "|-",
    "? ",
    "---",
    "...",
    "%YAML 1.1\n",
    "%TAG ! tag:x:\n",
    "\t",
    "<<: ",
    "~",
    "null",
    "true",
    "1e309",
    "-0",
    "0x1F",
    ".nan",
    "2024-01-01",
    "id",
    "apps/x",
    "main.s.t",
    "{{",
    "}}",
    "{%",
    "%}",
    "var('team')",
    "env('HOME')",
    "''",
    "\u202e",
    "\U0001f600",
    "\x00",
    "\ufeff",
    "\r\n",
]


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    check_contract(text)


@FUZZ
@given(st.lists(st.sampled_from(YAML_TOKENS), max_size=60).map("".join))
def test_yaml_shaped_text(text: str) -> None:
    check_contract(text)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decoded_as_the_loader_would(data: bytes) -> None:
    check_contract(data.decode("utf-8", "replace"))


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["{{", "{{ x }}", "{% if %}", "{{ var('nope') }}", "{{ env('HOME') }}"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def all_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [path] if path else []
    if isinstance(value, dict):
        for key, child in value.items():
            paths += all_paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            paths += all_paths(child, (*path, i))
    return paths


PATHS = all_paths(BASE)


@st.composite
def mutated_specs(draw: st.DrawFn) -> Any:
    spec = base()
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS))
        operation = draw(st.sampled_from(["delete", "replace", "add", "rename"]))
        try:
            parent = spec
            for part in path[:-1]:
                parent = parent[part]
            last = path[-1]
            if operation == "delete":
                del parent[last]
            elif operation == "replace":
                parent[last] = draw(VALUES)
            elif operation == "add" and isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=10))] = draw(VALUES)
            elif operation == "rename" and isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=10))] = parent.pop(last)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or reshaped this path
    return spec


@FUZZ
@given(mutated_specs())
def test_structured_mutations_of_a_valid_spec(spec: Any) -> None:
    check_contract(dump(spec))


@FUZZ
@given(mutated_specs(), st.integers(0, 400), st.sampled_from(["", "\n", "  ", "- ", ": ", "{["]))
def test_mutated_specs_with_torn_text(spec: Any, cut: int, junk: str) -> None:
    text = dump(spec)
    check_contract(text[:cut] + junk + text[cut:])


def test_the_base_spec_is_valid() -> None:
    assert isinstance(check_contract(dump(BASE)), Job)
    assert len(list(string_paths(BASE))) >= 14


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a: &a [*a]\n", id="recursive-alias"),
        pytest.param("name: " + "[" * 3000 + "]" * 3000 + "\n", id="deep-flow-nesting"),
        pytest.param(
            "".join("  " * i + f"k{i}:\n" for i in range(1500)) + "  " * 1500 + "v\n",
            id="deep-block-nesting",
        ),
        pytest.param(
            dump({**BASE, "description": "{{" * 300 + " 1 " + "}}" * 300}), id="jinja-deep"
        ),
        pytest.param(dump({**BASE, "description": "{{ 1 / 0 }}"}), id="jinja-zero-division"),
        pytest.param(
            dump({**BASE, "description": "{% for i in range(10**9) %}x{% endfor %}"}),
            id="jinja-huge-range",
        ),
        pytest.param(dump({**BASE, "description": "{{ '%d' % 'x' }}"}), id="jinja-format-error"),
        pytest.param(dump({**BASE, "description": "{{ {}.x.y }}"}), id="jinja-undefined-chain"),
        pytest.param(dump({**BASE, "description": "{{ 10 ** 100000 }}"}), id="jinja-huge-power"),
    ],
)
def test_hostile_file_is_a_spec_error(text: str) -> None:
    assert not isinstance(check_contract(text), Job)


@pytest.mark.parametrize(
    "key",
    ['"bad\\nkey"', '"bad\\rkey"', '"\\e[31mred\\e[0m"', '"nul\\0key"', '"line\\Lsep"'],
)
def test_control_characters_in_keys_do_not_break_the_one_line_message(key: str) -> None:
    text = dump(BASE) + f"{key}: 1\n"
    assert not isinstance(check_contract(text), Job)


def test_yaml_reader_error_is_one_line_with_its_real_line() -> None:
    error = check_contract(dump(BASE) + "extra: a\x07b\n")
    assert str(error).startswith(f"fuzz.yml:{dump(BASE).count(chr(10)) + 1}:"), str(error)


def billion_laughs(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "name: laughs\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(billion_laughs(9), id="billion-laughs"),
        pytest.param(dump({**BASE, "description": "{{ 'x' * 10**10 }}"}), id="jinja-10GB-string"),
        pytest.param(dump({**BASE, "description": "{{ [0] * 10**9 }}"}), id="jinja-10GB-list"),
    ],
)
def test_resource_bombs_are_refused_quickly(text: str) -> None:
    """Run where a blow-up cannot hurt: 2 GB of memory, 20 s."""
    result = load_in_child(text)
    assert result["outcome"] == "spec_error", result
    assert result["message"].startswith("fuzz.yml:"), result
