"""``fleetctl validate``: a manifest checked offline exactly as the connector checks it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet_connector.ankaios.manifest import parse_manifest
from fleet_connector.errors import RequestError
from fleet_connector.options import ConfigError
from fleetctl import output
from fleetctl.commands import options
from fleetctl.commands.command import Command, Invocation, define
from fleetctl.commands.options import Subcommands

VALID, INVALID = 0, 1


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "validate",
        help="check manifests offline",
        description="Check manifests offline as a car checks them: the JSON Schema of "
        "ank apply for v1, unknown keys as warnings. Exits 0 when all are valid, 1 when "
        "one is not (with --strict: also when one has warnings), 2 when one cannot be read.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="manifests (YAML)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="count warnings (unknown keys) as errors, as a car with STRICT=true does",
    )
    options.add_output(parser, "table, json or yaml")
    define(parser, Command(_run, offline=True))


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


def _run(invocation: Invocation) -> int:
    """0 when every file is valid, 1 when one is not; unreadable files are usage errors (2)."""
    args = invocation.args
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
