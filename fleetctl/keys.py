"""``fleetctl keys`` and ``fleetctl sign``: signing keys, and signed requests as files."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fleet_connector.mqtt.topics import Operation
from fleet_connector.options import ConfigError
from fleet_connector.requests.signatures import SigningKey
from fleetctl import signing

OPERATIONS = {
    "apply": Operation.APPLY,
    "delete": Operation.DELETE,
    "plan": Operation.PLAN,
    "plan-delete": Operation.PLAN_DELETE,
}


def add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = actions.add_parser(
        "generate",
        help="make a new Ed25519 signing key",
        description="Write a new private key to KEY_ID.key (or --out), readable by you only, "
        "and print its line for the cars' TRUSTED_KEYS file.",
    )
    generate.add_argument("key_id", metavar="KEY_ID", help="the key's name, e.g. ops-2026")
    generate.add_argument("--out", metavar="FILE", help="where to write the private key")
    public = actions.add_parser(
        "public", help="print a key's TRUSTED_KEYS line", description="Print a key's line."
    )
    public.add_argument("key_file", metavar="KEY", help="a private key file")


def run_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "public":
        print(signing.load_key(Path(args.key_file)).trusted_line())
        return 0
    try:
        key = SigningKey.generate(args.key_id)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    path = Path(args.out or f"{args.key_id}.key")
    try:
        # O_EXCL: never overwrite a key; 0600: the private key is for its owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key.to_text())
    print(f"wrote {path}; its TRUSTED_KEYS line:", file=sys.stderr)
    print(key.trusted_line())
    return 0


def add_sign_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the payload to sign (a manifest)")
    parser.add_argument("--sign-key", required=True, metavar="KEY", help="the private key file")
    parser.add_argument(
        "--operation",
        choices=sorted(OPERATIONS),
        default="apply",
        help="the request it is for (default: apply)",
    )
    parser.add_argument("--all-cars", action="store_true", help="valid for every car (target '*')")
    add_validity(parser)


def add_signing(parser: argparse.ArgumentParser) -> None:
    """--sign-key and --sign-valid-for, for the commands that send requests."""
    parser.add_argument("--sign-key", metavar="KEY", help="sign each car's request with this key")
    add_validity(parser)


def add_validity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sign-valid-for",
        type=_seconds,
        default=signing.DEFAULT_VALID_FOR,
        metavar="SECONDS",
        help="a car refuses the signed request after this long (default: "
        f"{signing.DEFAULT_VALID_FOR}); keep it longer than a car may be offline",
    )


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds above 0")
    return value


def run_sign(args: argparse.Namespace, vins: list[str], payload: bytes) -> int:
    """Writes the envelope to stdout, for ``mosquitto_pub -f``."""
    signer = signing.Signer(Path(args.sign_key), OPERATIONS[args.operation], args.sign_valid_for)
    sys.stdout.buffer.write(signer.envelope(payload, signing.targets_of(vins, args.all_cars)))
    sys.stdout.buffer.flush()
    return 0
