"""``fleetctl validate``: a manifest checked offline exactly as the connector checks it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fleet_connector.ankaios.manifest import parse_manifest
from fleet_connector.errors import RequestError
from fleet_connector.options import ConfigError
from fleetctl import output

VALID, INVALID = 0, 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="manifests (YAML)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="count warnings (unknown keys) as errors, as a car with STRICT=true does",
    )
    parser.add_argument(
        "-o", "--output", choices=output.FORMATS, default="table", help="table, json or yaml"
    )


def check(path: Path, strict: bool) -> dict[str, Any]:
    try:
        payload = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read manifest {path}: {e.strerror}") from None
    try:
        warnings = list(parse_manifest(payload).warnings)
    except RequestError as e:
        return {"file": str(path), "valid": False, "errors": [e.message], "warnings": []}
    valid = not (strict and warnings)
    return {"file": str(path), "valid": valid, "errors": [], "warnings": warnings}


def run(args: argparse.Namespace) -> int:
    """0 when every file is valid, 1 when one is not; unreadable files are usage errors (2)."""
    results = [check(Path(name), args.strict) for name in args.files]
    if args.output != "table":
        print(output.dump(results, args.output), flush=True)
    else:
        for result in results:
            verdict = "valid" if result["valid"] else "invalid"
            print(f"{result['file']}: {verdict}")
            for error in result["errors"]:
                print(f"  error: {error}")
            for warning in result["warnings"]:
                print(f"  warning: {warning}")
    return VALID if all(r["valid"] for r in results) else INVALID
