"""YAML read with the line of every key, so a mistake is reported where the author made it.

PyYAML composes a node tree whose nodes carry marks (line, column); the data is built from
the same tree, and a map from each value's path (`("segments", "vip", "all", 1)`) to the
place of its key (or, for a list item, of the item) is kept beside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from orbita.core.errors import FieldProblem, InvalidInputError

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Place:
    """1-based line and column of a key in a YAML text."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class YamlSource:
    """Plain data (dicts, lists, scalars) and where each part of it was written."""

    data: Any
    places: Mapping[Path, Place]
    source: str

    def place(self, path: Sequence[str | int]) -> Place | None:
        """The place of the deepest part of `path` that exists in the text."""
        path = tuple(path)
        while path:
            found = self.places.get(path)
            if found is not None:
                return found
            path = path[:-1]
        return self.places.get(())

    def get(self, path: Sequence[str | int]) -> Any:
        value = self.data
        for part in path:
            value = value[part]
        return value

    def keys_named(self, key: str, *, under: Path = ()) -> Iterator[tuple[Path, Any]]:
        """(path of the mapping, value) for every mapping under `under` that has `key`."""
        try:
            start = self.get(under)
        except (KeyError, IndexError, TypeError):
            return
        yield from _keys_named(start, key, under)


def _keys_named(value: Any, key: str, path: Path) -> Iterator[tuple[Path, Any]]:
    if isinstance(value, dict):
        if key in value:
            yield path, value[key]
        for name, child in value.items():
            yield from _keys_named(child, key, (*path, name))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _keys_named(child, key, (*path, index))


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans, as editors' YAML servers read them: only true and false. In YAML 1.1
    `on`, `off`, `yes` and `no` are booleans too, which turned `trigger: {segment: x, on:
    exited}` into a key `True`."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(text: str, *, source: str) -> YamlSource:
    """Parse YAML text; a syntax error or a key written twice is an InvalidInputError with
    the line (a duplicate would otherwise silently replace the first)."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line = mark.line + 1 if mark is not None else None
        problem = error.problem or "not valid YAML"
        raise InvalidInputError(
            [FieldProblem(field="", message=f"not valid YAML: {problem}", line=line)],
            summary=f"{source}: cannot read",
        ) from None
    places: dict[Path, Place] = {}
    problems: list[FieldProblem] = []
    if root is None:
        return YamlSource(data=None, places=places, source=source)
    places[()] = _place(root)
    _walk(root, (), places, problems)
    if problems:
        raise InvalidInputError(problems, summary=f"{source}: invalid")
    loader = _Loader("")
    try:
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        raise InvalidInputError(
            [
                FieldProblem(
                    field="",
                    message=f"not valid YAML: {error.problem}",
                    line=mark.line + 1 if mark is not None else None,
                )
            ],
            summary=f"{source}: cannot read",
        ) from None
    finally:
        loader.dispose()
    return YamlSource(data=data, places=places, source=source)


def _place(node: yaml.Node) -> Place:
    return Place(line=node.start_mark.line + 1, column=node.start_mark.column + 1)


def _walk(
    node: yaml.Node, path: Path, places: dict[Path, Place], problems: list[FieldProblem]
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                problems.append(
                    FieldProblem(
                        field=dotted(child),
                        message="written twice: the second would silently replace the first",
                        line=key_node.start_mark.line + 1,
                    )
                )
                continue
            seen.add(key)
            places[child] = _place(key_node)
            _walk(value_node, child, places, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            places[child] = _place(item)
            _walk(item, child, places, problems)


def dotted(path: Sequence[str | int]) -> str:
    """`("segments", "vip", "all", 1)` -> `segments.vip.all[1]` (how the messages name it)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
