"""The state directory's database: durable, and an unreadable one never stops the connector."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fleet_connector.journal.store import DATABASE, Store


def test_committed_rows_survive_a_sigkill(tmp_path: Path) -> None:
    writer = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from fleet_connector.journal.store import Store\n"
        "store = Store(Path(sys.argv[1]))\n"
        "with store.transaction() as db:\n"
        "    db.execute('CREATE TABLE t (v TEXT)')\n"
        "    db.execute(\"INSERT INTO t VALUES ('kept')\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", writer, str(tmp_path)], check=False)
    assert done.returncode == -9
    assert Store(tmp_path).query("SELECT v FROM t") == [("kept",)]


def test_a_corrupt_database_is_set_aside_and_a_new_one_used(tmp_path: Path) -> None:
    (tmp_path / DATABASE).write_bytes(b"this is not a database" * 100)
    store = Store(tmp_path)
    assert store.set_aside is not None
    assert store.set_aside.read_bytes().startswith(b"this is not a database")
    with store.transaction() as db:
        db.execute("CREATE TABLE t (v TEXT)")
    assert store.query("SELECT count(*) FROM t") == [(0,)]


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.transaction() as db:
        db.execute("CREATE TABLE t (v TEXT)")
    try:
        with store.transaction() as db:
            db.execute("INSERT INTO t VALUES ('half')")
            raise RuntimeError("crash in the middle")
    except RuntimeError:
        pass
    assert store.query("SELECT count(*) FROM t") == [(0,)]
