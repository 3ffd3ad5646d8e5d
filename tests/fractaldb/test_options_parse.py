"""The shared KEY=VALUE parser: YAML scalars, and LO:HI ranges kept as text."""

from __future__ import annotations

import pytest

from fractaldb.core.options import parse_key_values, parse_value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1:20", "1:20"),  # YAML 1.1 alone reads this as the base-60 integer 80
        ("0:0.1", "0:0.1"),
        ("10 : 60", "10 : 60"),
        ("3", 3),
        ("1e-3", 1e-3),
        ("[0.35,1.0]", [0.35, 1.0]),
        ("null", None),
        ("true", True),
        ("a:b", "a:b"),
        ("rand-m9-mstd0.5-inc1", "rand-m9-mstd0.5-inc1"),
    ],
)
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_a_range_option_reaches_the_sampler_as_its_text():
    assert parse_key_values(["orbits=1:200", "eta=0:4"], "--set") == {
        "orbits": "1:200",
        "eta": "0:4",
    }
