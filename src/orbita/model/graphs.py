"""Cycles in a directed graph of names: segment references, journey steps without a wait."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def cycles_in(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Each cycle once, as the path that closes it (`[a, b, a]`), in a stable order.

    Targets that are not keys of `edges` are ignored (unknown names are reported elsewhere).
    """
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in edges.get(name, []):
            if target not in edges:
                continue
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    return cycles
