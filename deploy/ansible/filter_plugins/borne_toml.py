"""Ansible filter ``borne_toml``: render a mapping as TOML (the controller's ``borne.toml``).

Top-level scalars first, then one ``[table]`` per nested mapping (one level: the shape of
``controller/config.py``'s Settings). Strings are written as JSON strings, which are valid
TOML basic strings. Pure function; no file or network access.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any


def _value(value: Any, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v, path) for v in value) + "]"
    raise TypeError(f"borne_toml: {path}: cannot write a {type(value).__name__}")


def borne_toml(data: Mapping[str, Any]) -> str:
    """``data`` as a TOML document."""
    lines = [f"{k} = {_value(v, k)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for key, table in data.items():
        if isinstance(table, Mapping):
            lines += ["", f"[{key}]"]
            for sub, value in table.items():
                if value is None:
                    continue
                lines.append(f"{sub} = {_value(value, f'{key}.{sub}')}")
    return "\n".join(lines) + "\n"


class FilterModule:
    """Ansible's entry point for filter plugins."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        """The filters this module provides."""
        return {"borne_toml": borne_toml}
