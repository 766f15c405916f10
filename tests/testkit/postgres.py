"""A private PostgreSQL cluster owned by the test session, on a free loopback port.

``initdb`` + ``pg_ctl`` from Debian's postgresql package (/usr/lib/postgresql/<v>/bin) in a
temporary directory, trust authentication for one test user, fsync off (a test cluster is
thrown away). PostgreSQL refuses to run as root, so as root the cluster runs as the
``postgres`` user the package creates. Each test gets a database of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from testkit.broker import free_port

USER = "fleet"


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin directory."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
            "`make setup` installs Debian's postgresql package"
        )
    return found[-1].parent


@dataclass
class PostgresCluster:
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fleet-pg-")))
    bin: Path = field(default_factory=postgres_bin)

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def log_file(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.workdir} -c listen_addresses={self.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200 -c shared_buffers=32MB"
        )

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}): "
                f"{result.stderr.strip()} {self.log_text()[-2000:]}"
            )

    def start(self) -> PostgresCluster:
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D", str(self.data),
            "-U", USER,
            "-A", "trust",
            "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        self.resume()
        return self

    def pause(self) -> None:
        """Stops the server (an outage); :meth:`resume` starts it again with its data."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D", str(self.data),
            "-o", self._options,
            "-l", str(self.log_file),
            "-w", "-t", "60",
            "start",
        )  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
            if os.geteuid() == 0:
                command = ["runuser", "-u", "postgres", "--", *command]
            subprocess.run(command, capture_output=True, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text()
        except OSError:
            return ""
