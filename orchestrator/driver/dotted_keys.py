"""Dotted keys (`optim.lr`) into a trial's nested config dict: read, test, set.

A leaf module: the schema, the search space, the stage plan and the runner all address config keys
this way, and none of them may import another for it.
"""

from __future__ import annotations

from typing import Any


def has_path(data: dict[str, Any], dotted: str) -> bool:
    """True when every part of `dotted` exists (a key whose value is None exists)."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def get_path(data: dict[str, Any], dotted: str) -> Any:
    """The value at `dotted`, or None where a part is missing."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `dotted` in place, creating the mappings on the way."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
