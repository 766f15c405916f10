"""fleet-server's commands: tokens, audit verify, migrate, and one-line configuration errors."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit import Broker, free_port
from testkit.server import ServerProcess

from fleet_server import audit
from fleet_server.__main__ import main
from fleet_server.auth import authenticate
from fleet_server.config import serve_config
from fleet_server.db import Database, connect


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args), environ={})
    out, err = capsys.readouterr()
    return code, out, err


def test_tokens_create_prints_the_token_last_and_stores_only_its_hash(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "tokens", "create", "ci", "--role", "operator", "--database", database_url
    )
    assert code == 0
    token = out.splitlines()[-1]
    assert token.startswith("fst_") and len(token) > 40
    db = connect(database_url)
    try:
        who = authenticate(db, token)
        assert who is not None and (who.name, who.role.label) == ("ci", "operator")
        with db.transaction(write=False) as tx:
            stored = tx.execute("SELECT * FROM tokens").fetchall()
        assert token not in repr(stored)
    finally:
        db.close()


def test_tokens_list_and_revoke(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "tokens", "create", "alice", "--role", "admin", "--database", database_url)
    _, out, _ = run(
        capsys, "tokens", "create", "bob", "--role", "viewer", "--database", database_url
    )
    bob = out.splitlines()[-1]
    code, out, _ = run(capsys, "tokens", "list", "--database", database_url)
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [("alice", "admin", "-"), ("bob", "viewer", "-")]
    assert bob not in out

    assert run(capsys, "tokens", "revoke", "bob", "--database", database_url)[0] == 0
    db = connect(database_url)
    try:
        assert authenticate(db, bob) is None
    finally:
        db.close()
    code, _, err = run(capsys, "tokens", "revoke", "nobody", "--database", database_url)
    assert (code, err.strip()) == (2, "fleet-server: error: no token named 'nobody'")
    code, _, err = run(
        capsys, "tokens", "create", "alice", "--role", "viewer", "--database", database_url
    )
    assert code == 2 and "exists; revoke it first" in err


def _entries(db: Database) -> None:
    with db.transaction() as tx:
        for i in range(4):
            audit.append(tx, actor="t", action="test", vins=[f"V{i}"], detail={"i": i})


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2", "entry 2 was changed"),
        ("UPDATE audit_log SET detail = '{\"i\":9}' WHERE seq = 3", "entry 3 was changed"),
        ("DELETE FROM audit_log WHERE seq = 2", "entry 2 is missing"),
        ("DELETE FROM audit_log WHERE seq = 4", "the chain ends at entry 3 but the head says 4"),
        ("UPDATE audit_head SET count = 3", "the chain ends at entry 4 but the head says 3"),
    ],
)
def test_audit_verify_names_the_first_bad_entry(
    db: Database, capsys: pytest.CaptureFixture[str], tamper: str, says: str
) -> None:
    _entries(db)
    assert run(capsys, "audit", "verify", "--database", db.url)[:2] == (
        0,
        "audit trail intact: 4 entries\n",
    )
    with db.transaction() as tx:
        tx.execute(tamper)
    code, _, err = run(capsys, "audit", "verify", "--database", db.url)
    assert code == 1
    assert says in err


def test_an_entry_rewritten_with_a_new_hash_breaks_the_next_link(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    _entries(db)
    with db.transaction() as tx:
        tx.execute("UPDATE audit_log SET hash = ? WHERE seq = 2", ("f" * 64,))
    code, _, err = run(capsys, "audit", "verify", "--database", db.url)
    assert code == 1 and "entry 2 was changed" in err


def test_migrate_says_the_schema_is_up_to_date(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "migrate", "--database", database_url)
    assert code == 0 and "applied 0001_initial" in out
    code, out, _ = run(capsys, "migrate", "--database", database_url)
    assert code == 0 and "applied" not in out and "schema up to date" in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--listen", "nowhere"], "invalid value for --listen: 'nowhere' (must be HOST:PORT"),
        (["--listen", "127.0.0.1:99999"], "the port must be a number from 0 to 65535"),
        (["--broker-port", "x"], "invalid value for --broker-port"),
        (["--request-timeout", "-1"], "invalid value for --request-timeout"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["tokens", "create", "x", "--role", "god"], "argument --role: invalid choice: 'god'"),
        (
            ["tokens", "create", "x y", "--role", "viewer", "--database", "sqlite://{tmp}/x.db"],
            "invalid token name 'x y'",
        ),
        (["migrate", "--database", "mysql://db/x"], "unsupported database URL 'mysql://db/x'"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], says: str
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fleet-server: error: ")
    assert says in err


def test_an_unreachable_database_is_one_line_from_the_console_script() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleet_server",
            "tokens",
            "list",
            "--database",
            "postgresql://u:pw@127.0.0.1:1/x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "fleet-server: error: cannot connect to postgresql://u:***@127.0.0.1:1/x"
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_the_default_database_is_a_sqlite_file_in_the_user_s_data_directory(tmp_path: Path) -> None:
    config = serve_config({}, {"XDG_DATA_HOME": str(tmp_path)})
    assert config.database == f"sqlite://{tmp_path}/fleet-server/fleet.db"
    config = serve_config({}, {"HOME": str(tmp_path)})
    assert config.database == f"sqlite://{tmp_path}/.local/share/fleet-server/fleet.db"
    config = serve_config({}, {"FLEET_SERVER_DATABASE": "postgresql://u@h/d", "HOME": "/x"})
    assert config.database == "postgresql://u@h/d"
    config = serve_config(
        {"database": "sqlite:///a.db"}, {"FLEET_SERVER_DATABASE": "postgresql://u@h/d"}
    )
    assert config.database == "sqlite:///a.db"


def test_the_sqlite_file_is_readable_by_its_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new" / "fleet.db"
    assert run(capsys, "migrate", "--database", f"sqlite://{path}")[0] == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_serve_stops_cleanly_on_sigterm_and_a_taken_port_is_one_line(
    sqlite_url: str, broker: Broker, tmp_path: Path
) -> None:
    server = ServerProcess(sqlite_url, broker, tmp_path)
    server.process.terminate()
    assert server.process.wait(10) == 0
    assert f"fleet-server listening on http://127.0.0.1:{server.port}" in server.log_text()

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "fleet_server",
                "--listen",
                f"127.0.0.1:{port}",
                "--database",
                sqlite_url,
            ],
            env={**os.environ, **broker.env()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert (
        f"fleet-server: error: cannot listen on 127.0.0.1:{port}: Address already in use"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_broker_refusing_the_server_ends_the_start_in_one_line(
    sqlite_url: str, make_broker: Callable[..., Broker]
) -> None:
    port = free_port()
    make_broker(port=port, config_text=f"listener {port} 127.0.0.1\nallow_anonymous false\n")
    result = subprocess.run(
        [sys.executable, "-m", "fleet_server", "--listen", f"127.0.0.1:{free_port()}"],
        env={
            **os.environ,
            "FLEET_SERVER_DATABASE": sqlite_url,
            "MQTT_BROKER_ADDR": "127.0.0.1",
            "MQTT_BROKER_PORT": str(port),
            "MQTT_PROTOCOL": "5",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    broker = f"mqtt://127.0.0.1:{port} (MQTT 5)"
    last = result.stderr.splitlines()[-1]
    assert last == f"fleet-server: error: broker {broker} refused us: Not authorized"
