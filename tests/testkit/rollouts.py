"""Helpers shared by the rollout tests: starting rollouts, reading them, waiting on them."""

from __future__ import annotations

import uuid
from typing import Any

from testkit.live import manifest
from testkit.server import Api, wait_until

MANIFEST = manifest("vehicle-data-sender")


def prefix() -> str:
    """VINs of the test's own on the session's broker."""
    return f"R{uuid.uuid4().hex[:8].upper()}"


def start(api: Api, cars: Any, **keys: Any) -> str:
    body = {"manifest": MANIFEST, "cars": cars, **keys}
    response = api.call("POST", "/api/v1/rollouts", json=body)
    assert response.status_code == 201, response.text
    rollout_id: str = response.json()["id"]
    return rollout_id


def get(api: Api, rollout_id: str) -> dict[str, Any]:
    response = api.get(f"/api/v1/rollouts/{rollout_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def car(rollout: dict[str, Any], vin: str) -> dict[str, Any]:
    for entry in rollout["cars"]:
        if entry["vin"] == vin:
            found: dict[str, Any] = entry
            return found
    raise AssertionError(f"{vin} is not in the rollout: {[c['vin'] for c in rollout['cars']]}")


def states(rollout: dict[str, Any]) -> dict[str, str]:
    return {c["vin"]: c["state"] for c in rollout["cars"]}


def wait_rollout(api: Api, rollout_id: str, state: str, timeout: float = 20.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = get(api, rollout_id)
        return found if found["state"] == state else None

    try:
        result: dict[str, Any] = wait_until(check, timeout=timeout, interval=0.05)
    except AssertionError:
        raise AssertionError(f"not {state}: {get(api, rollout_id)}") from None
    return result


def wait_car(
    api: Api, rollout_id: str, vin: str, state: str, timeout: float = 20.0
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = get(api, rollout_id)
        return (
            found if any(c["vin"] == vin and c["state"] == state for c in found["cars"]) else None
        )

    try:
        result: dict[str, Any] = wait_until(check, timeout=timeout, interval=0.05)
    except AssertionError:
        raise AssertionError(f"{vin} not {state}: {get(api, rollout_id)}") from None
    return result


def audit_actions(api: Api) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api.get(f"/api/v1/audit?after={after}&limit=1000", role="admin").json()
        items = page["items"] if isinstance(page, dict) else page
        if not items:
            return entries
        entries.extend(items)
        after = items[-1]["seq"]
