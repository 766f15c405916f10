"""The reference documents every option the programs take and every error code, so it
cannot drift from the code. It lives in docs/ since the README became a user's guide."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_connector.config import CONNECTOR_OPTIONS
from fleet_connector.errors import ErrorCode
from fleet_connector.options import Option
from vehicle_data_sender.cli import OPTIONS as SENDER_OPTIONS

DOCS = Path(__file__).parents[1] / "docs"
CONNECTOR_REFERENCE = (DOCS / "connector.md").read_text()
SENDER_REFERENCE = (DOCS / "sender.md").read_text()


def _documented(option: Option, reference: str) -> None:
    # An options table row starts with the flag and names the variable next to it.
    assert f"| `{option.flag}` |" in reference
    assert option.env is None or f"| `{option.env}` |" in reference


@pytest.mark.parametrize("option", CONNECTOR_OPTIONS, ids=lambda o: o.flag)
def test_every_connector_option_is_documented(option: Option) -> None:
    _documented(option, CONNECTOR_REFERENCE)


@pytest.mark.parametrize("option", SENDER_OPTIONS, ids=lambda o: o.flag)
def test_every_sender_option_is_documented(option: Option) -> None:
    _documented(option, SENDER_REFERENCE)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_is_documented(code: ErrorCode) -> None:
    assert f"| `{code}` |" in CONNECTOR_REFERENCE
