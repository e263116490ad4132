"""A tiny TOML writer for generated documents (tomli_w is not a dependency)."""

from __future__ import annotations

import json
import math
from typing import Any


def lit(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON string escapes are TOML basic-string escapes, except \/ which json never emits; surrogates
        # cannot be encoded, so they are replaced (tomllib would refuse them anyway)
        return json.dumps(v.encode("utf-8", "replace").decode("utf-8"), ensure_ascii=True)
    if isinstance(v, list):
        return "[" + ", ".join(lit(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {lit(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def dumps(doc: dict[str, Any]) -> str:
    """Top-level scalars, [tables] of scalars and [[arrays of tables]]; deeper values as inline tables."""
    head, tail = [], []
    for k, v in doc.items():
        key = json.dumps(str(k))
        if isinstance(v, dict):
            tail.append(f"[{key}]")
            tail.extend(f"{json.dumps(str(k2))} = {lit(x)}" for k2, x in v.items())
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                tail.append(f"[[{key}]]")
                tail.extend(f"{json.dumps(str(k2))} = {lit(x)}" for k2, x in item.items())
        else:
            head.append(f"{key} = {lit(v)}")
    return "\n".join(head + tail) + "\n"
