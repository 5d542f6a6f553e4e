"""Documented, checked method parameters: every field says its meaning, allowed values and source paper.

A method's `Params` dataclass declares each field with `param(...)`; the field metadata drives both the checks
(`check_fields`, run from `Params.__post_init__`, so a bad value fails before any model loads) and the
`harness methods` table (`describe`). Checks are by declared kind (bool, int, float, str, dict), closed or open
bounds and a list of choices; combination checks live in the method's own `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import Field
from typing import Any

from kdcore.errors import HarnessError, unknown_choice

KINDS = {"bool": bool, "int": int, "float": float, "str": str, "dict": dict}


def param(
    default: Any,
    meaning: str,
    *,
    kind: str,
    source: str,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    choices: tuple[str, ...] | None = None,
    optional: bool = False,
) -> Any:
    """A dataclass field with its documentation and checks in `metadata` (`dict` kinds default to {})."""
    meta = {
        "meaning": meaning,
        "kind": kind,
        "source": source,
        "low": low,
        "high": high,
        "open_low": open_low,
        "open_high": open_high,
        "choices": choices,
        "optional": optional,
    }
    if kind == "dict":
        return dataclasses.field(default_factory=dict, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def allowed(meta: dict[str, Any]) -> str:
    """The allowed values of a field, as the `harness methods` table shows them."""
    if meta["choices"]:
        text = " | ".join(meta["choices"])
    elif meta["low"] is not None or meta["high"] is not None:
        left = "(" if meta["open_low"] or meta["low"] is None else "["
        right = ")" if meta["open_high"] or meta["high"] is None else "]"
        low = "-inf" if meta["low"] is None else f"{meta['low']:g}"
        high = "inf" if meta["high"] is None else f"{meta['high']:g}"
        text = f"{meta['kind']} in {left}{low}, {high}{right}"
    else:
        text = meta["kind"]
    return f"{text} or null" if meta["optional"] else text


def check_value(owner: str, name: str, value: Any, meta: dict[str, Any]) -> Any:
    """`value` checked against a field's metadata (ints are accepted for floats); a HarnessError names the
    parameter, the value and what is allowed."""
    if value is None and meta["optional"]:
        return value
    kind = KINDS[meta["kind"]]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    bad = HarnessError(f"parameter {name!r} of {owner}: {value!r} is not allowed; allowed: {allowed(meta)}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad
    if meta["choices"] and value not in meta["choices"]:
        raise unknown_choice(f"{name} for {owner}:", value, meta["choices"])
    if kind in (int, float):
        if isinstance(value, float) and not math.isfinite(value):
            raise bad
        low, high = meta["low"], meta["high"]
        if low is not None and (value < low or (meta["open_low"] and value == low)):
            raise bad
        if high is not None and (value > high or (meta["open_high"] and value == high)):
            raise bad
    return value


def check_fields(params: Any, owner: str) -> None:
    """Check (and normalise ints to floats in) every documented field of a Params instance."""
    for f in dataclasses.fields(params):
        if "kind" in f.metadata:
            setattr(params, f.name, check_value(owner, f.name, getattr(params, f.name), dict(f.metadata)))


def default_of(f: Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def describe(params_cls: type) -> list[dict[str, str]]:
    """One row per field of a Params class: name, default, allowed range, meaning, source."""
    rows = []
    for f in dataclasses.fields(params_cls):
        meta = dict(f.metadata)
        rows.append(
            {
                "name": f.name,
                "default": repr(default_of(f)),
                "allowed": allowed(meta) if meta else "-",
                "meaning": meta.get("meaning", "-"),
                "source": meta.get("source", "-"),
            }
        )
    return rows
