"""``fleet-server tokens create|list|revoke``: API tokens, managed at the database."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from fleet_server import audit
from fleet_server.auth import ROLES, Role, create_token, list_tokens, revoke_token
from fleet_server.commands.common import add_database_option, cli_actor, open_database


def add_parser(commands: Any, name: str) -> None:
    parser = commands.add_parser(name, help="create, list or revoke API tokens")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create", help="create a token; its value is printed once, as the last line"
    )
    create.add_argument("name", metavar="NAME", help="who or what uses it (the audit's actor)")
    create.add_argument("--role", required=True, choices=ROLES, help="what it may do")
    add_database_option(create)
    create.set_defaults(run=run_create)

    listing = actions.add_parser("list", help="list tokens (never their values)")
    add_database_option(listing)
    listing.set_defaults(run=run_list)

    revoke = actions.add_parser("revoke", help="revoke a token: refused from now on")
    revoke.add_argument("name", metavar="NAME")
    add_database_option(revoke)
    revoke.set_defaults(run=run_revoke)


def run_create(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    db = open_database(args, environ)
    try:
        role = Role.parse(args.role)
        with db.transaction() as tx:
            token = create_token(tx, args.name, role)
            audit.append(
                tx,
                actor=cli_actor(),
                action="token.create",
                detail={"name": args.name, "role": role.label},
            )
    finally:
        db.close()
    print(f"created token {args.name!r} with role {role.label}; it is shown only this once:")
    print(token)
    return 0


def run_list(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    db = open_database(args, environ)
    try:
        tokens = list_tokens(db)
    finally:
        db.close()
    print(f"{'NAME':<24} {'ROLE':<9} {'CREATED':<29} REVOKED")
    for t in tokens:
        print(f"{t.name:<24} {t.role.label:<9} {t.created_at:<29} {t.revoked_at or '-'}")
    return 0


def run_revoke(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    db = open_database(args, environ)
    try:
        with db.transaction() as tx:
            revoke_token(tx, args.name)
            audit.append(tx, actor=cli_actor(), action="token.revoke", detail={"name": args.name})
    finally:
        db.close()
    print(f"revoked token {args.name!r}")
    return 0
