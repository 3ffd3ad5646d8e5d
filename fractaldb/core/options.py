"""Parsing of repeated KEY=VALUE command-line options, shared by every subcommand."""

from __future__ import annotations

import re
from typing import Any

import yaml

from fractaldb.core.errors import FractalDBError

# YAML 1.1 reads 1:20 as the base-60 integer 80; a colon between numbers is a range here
_COLON_NUMBERS = re.compile(r"\s*[-+]?[0-9][0-9_.]*(\s*:\s*[-+]?[0-9][0-9_.]*)+\s*")


def parse_value(text: str) -> Any:
    """Parse a value as YAML (ints, floats incl. 1e-3, bools, null, lists), else keep the string
    (LO:HI ranges stay text)."""
    if _COLON_NUMBERS.fullmatch(text):
        return text.strip()
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)  # PyYAML reads "1e-3" as a string
        except ValueError:
            return value
    return value


def parse_key_values(pairs: tuple[str, ...] | list[str], option: str) -> dict[str, Any]:
    """Turn repeated KEY=VALUE options into a dict with typed values (dashes become underscores)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise FractalDBError(
                f"{option} expects KEY=VALUE, got {pair!r}; "
                f"fix: {option} {key.strip() or 'KEY'}=VALUE"
            )
        out[key.strip().replace("-", "_")] = parse_value(value)
    return out
