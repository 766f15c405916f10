"""Selectors in Kubernetes syntax; label keys and values validated as Kubernetes does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_server.selectors import LabelError, SelectorError, check_key, check_value, parse

CARS = {
    "eu-a": {"region": "eu", "model": "a"},
    "eu-b-beta": {"region": "eu", "model": "b", "beta": ""},
    "us-c": {"region": "us", "model": "c"},
    "bare": {},
}


def chosen(selector: str) -> list[str]:
    parsed = parse(selector)
    return sorted(name for name, labels in CARS.items() if parsed.matches(labels))


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", ["bare", "eu-a", "eu-b-beta", "us-c"]),
        ("region=eu", ["eu-a", "eu-b-beta"]),
        ("region==eu", ["eu-a", "eu-b-beta"]),
        # != and notin also choose cars without the label, as in Kubernetes
        ("region!=eu", ["bare", "us-c"]),
        ("model in (a,c)", ["eu-a", "us-c"]),
        ("model notin (a, c)", ["bare", "eu-b-beta"]),
        ("beta", ["eu-b-beta"]),
        ("!beta", ["bare", "eu-a", "us-c"]),
        ("region=eu,!beta", ["eu-a"]),
        ("  region = eu ,  model in ( b ) ", ["eu-b-beta"]),
        ("beta=", ["eu-b-beta"]),
    ],
)
def test_selectors_choose_as_kubernetes_does(selector: str, expected: list[str]) -> None:
    assert chosen(selector) == expected


@pytest.mark.parametrize(
    ("selector", "column", "says"),
    [
        ("region=eu x", 11, "expected ',' or the end"),
        ("model in (a,b", 14, "expected ',' or ')'"),
        ("model in a", 10, "expected '(' after in"),
        ("model notin ()", 14, "needs at least one value"),
        ("=eu", 1, "expected a label key"),
        ("region=eu,", 11, "expected a label key"),
        ("region<eu", 1, "label key 'region<eu'"),
        ("region=<b>", 8, "the value must be"),
        ("Example.com/x=1", 1, "the prefix must be a DNS subdomain"),
        ("a=b=c", 4, "expected ',' or the end"),
        ("!", 2, "expected a label key"),
    ],
)
def test_a_selector_that_does_not_parse_says_where(selector: str, column: int, says: str) -> None:
    with pytest.raises(SelectorError) as e:
        parse(selector)
    assert str(e.value).startswith(f"column {column}: ")
    assert says in str(e.value)


@pytest.mark.parametrize(
    "key", ["region", "a", "example.com/region", "a.b-c_d", "x" * 63, f"{'d' * 253}/k"]
)
def test_valid_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "-a", "a-", "x" * 64, "Example.com/a", "/a", "a/", "a b", "<script>", "a/b/c", "é"],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(LabelError):
        check_key(key)


@pytest.mark.parametrize("value", ["", "eu", "a.b_c-d", "x" * 63])
def test_valid_values(value: str) -> None:
    assert check_value("k", value) == value


@pytest.mark.parametrize("value", ["x" * 64, "-a", "a ", "<b>bold</b>", "a,b", "a=b", "ü"])
def test_invalid_values(value: str) -> None:
    with pytest.raises(LabelError):
        check_value("k", value)


_NAME = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,20}[a-z0-9])?", fullmatch=True)


@given(st.dictionaries(_NAME, _NAME, max_size=5), _NAME, _NAME)
def test_equality_and_inequality_are_complements(
    labels: dict[str, str], key: str, value: str
) -> None:
    equal = parse(f"{key}={value}").matches(labels)
    assert parse(f"{key}!={value}").matches(labels) is not equal
    assert parse(f"{key} in ({value})").matches(labels) is equal
    assert parse(f"{key} notin ({value})").matches(labels) is not equal
    assert parse(key).matches(labels) is (key in labels)
    assert parse(f"!{key}").matches(labels) is (key not in labels)
