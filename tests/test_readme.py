"""The README documents every option the programs take, so it cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_connector.config import CONNECTOR_OPTIONS
from fleet_connector.errors import ErrorCode
from fleet_connector.options import Option
from vehicle_data_sender.cli import OPTIONS as SENDER_OPTIONS

README = (Path(__file__).parents[1] / "README.md").read_text()


@pytest.mark.parametrize("option", [*CONNECTOR_OPTIONS, *SENDER_OPTIONS], ids=lambda o: o.flag)
def test_every_option_is_documented(option: Option) -> None:
    assert f"`{option.flag}`" in README
    assert option.env is None or f"`{option.env}`" in README


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_is_documented(code: ErrorCode) -> None:
    assert f"| `{code}` |" in README
