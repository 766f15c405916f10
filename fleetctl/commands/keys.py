"""``fleetctl keys`` and ``fleetctl sign``: signing keys, and signed requests as files."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fleet_connector.mqtt.topics import Operation
from fleet_connector.options import ConfigError
from fleet_connector.requests.signatures import SigningKey
from fleetctl.client import signing
from fleetctl.commands import options
from fleetctl.commands.command import Command, Invocation, define
from fleetctl.commands.options import Subcommands

OPERATIONS = {
    "apply": Operation.APPLY,
    "delete": Operation.DELETE,
    "plan": Operation.PLAN,
    "plan-delete": Operation.PLAN_DELETE,
}


def register(subcommands: Subcommands) -> None:
    keys = subcommands.add_parser(
        "keys",
        help="make signing keys",
        description="Ed25519 keys for signed requests (see the README, Signed requests).",
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
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
    define(keys, Command(_run_keys, offline=True))

    sign = subcommands.add_parser(
        "sign",
        help="write a signed request to stdout, for mosquitto_pub -f",
        description="Sign FILE for the cars named (or --all-cars) and write the envelope to "
        "stdout: mosquitto_pub -t vehicle/1/manifest/apply/req -f signed.txt",
    )
    options.add_cars(sign)
    sign.add_argument("file", metavar="FILE", help="the payload to sign (a manifest)")
    sign.add_argument("--sign-key", required=True, metavar="KEY", help="the private key file")
    sign.add_argument(
        "--operation",
        choices=sorted(OPERATIONS),
        default="apply",
        help="the request it is for (default: apply)",
    )
    sign.add_argument("--all-cars", action="store_true", help="valid for every car (target '*')")
    options.add_validity(sign)
    define(sign, Command(_run_sign, prepare=_sign_payload, offline=True))


def _run_keys(invocation: Invocation) -> int:
    args = invocation.args
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


def _sign_payload(args: argparse.Namespace, vins: list[str]) -> bytes:
    """The manifest, checked as apply checks it (--operation is one of OPERATIONS)."""
    return options.load_manifest(Path(args.file))


def _run_sign(invocation: Invocation) -> int:
    """Writes the envelope to stdout, for ``mosquitto_pub -f``."""
    args = invocation.args
    signer = signing.Signer(Path(args.sign_key), OPERATIONS[args.operation], args.sign_valid_for)
    targets = signing.targets_of(invocation.vins, args.all_cars)
    sys.stdout.buffer.write(signer.envelope(invocation.payload, targets))
    sys.stdout.buffer.flush()
    return 0
