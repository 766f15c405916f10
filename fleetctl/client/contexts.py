"""fleetctl's contexts, as kubectl has them: named places to work, one of them current.

A context with a ``server`` sends commands through that fleet-server's API with the token
in its ``token-file``; a context without one (or no context at all) works on the broker,
as fleetctl always has. The file is YAML, ``$XDG_CONFIG_HOME/fleetctl/config.yaml``
(``~/.config/fleetctl/config.yaml``), or wherever ``FLEETCTL_CONFIG`` says::

    current-context: prod
    contexts:
      prod:
        server: https://fleet.example.com:8080
        token-file: /home/me/.config/fleetctl/prod.token
      lab: {}

It holds the token file's path, never a token.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from fleet_connector.options import ConfigError
from fleetctl.client.server import FleetServer

CONFIG_ENV = "FLEETCTL_CONFIG"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# A token file holds one token; anything much longer is not one.
MAX_TOKEN_FILE = 4096


@dataclass(frozen=True)
class Context:
    name: str
    server: str | None = None
    token_file: str | None = None

    def to_yaml(self) -> dict[str, str]:
        found: dict[str, str] = {}
        if self.server:
            found["server"] = self.server
        if self.token_file:
            found["token-file"] = self.token_file
        return found


@dataclass
class Contexts:
    """The configuration file's content."""

    path: Path | None
    """None: no file in this environment (no HOME, no XDG_CONFIG_HOME)."""
    current: str | None = None
    contexts: dict[str, Context] = field(default_factory=dict)

    def get(self, name: str) -> Context:
        found = self.contexts.get(name)
        if found is None:
            known = ", ".join(sorted(self.contexts)) or "none"
            where = self.path or "the environment (no HOME, no XDG_CONFIG_HOME)"
            raise ConfigError(f"no context named {name!r} in {where} (known: {known})")
        return found


def config_path(environ: Mapping[str, str]) -> Path | None:
    """Where the file is; None in an environment with neither HOME nor XDG_CONFIG_HOME
    (a service's, a test's): then there are no contexts, whatever this user's home holds."""
    explicit = environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = environ.get("XDG_CONFIG_HOME")
    if not base:
        home = environ.get("HOME")
        if not home:
            return None
        base = str(Path(home) / ".config")
    return Path(base) / "fleetctl" / "config.yaml"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"invalid context name {name!r}: 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )
    return name


def load(environ: Mapping[str, str]) -> Contexts:
    """The contexts; none when the file does not exist. A broken file is a ConfigError."""
    path = config_path(environ)
    if path is None:
        return Contexts(None)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Contexts(path)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with current-context and contexts")
    contexts: dict[str, Context] = {}
    raw = data.get("contexts") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: contexts is a mapping of names to contexts")
    for name, entry in raw.items():
        contexts[str(name)] = _context(path, str(name), entry)
    current = data.get("current-context")
    return Contexts(path, str(current) if current else None, contexts)


def _context(path: Path, name: str, entry: Any) -> Context:
    entry = entry or {}
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: context {name!r} is a mapping (server, token-file)")
    unknown = set(entry) - {"server", "token-file"}
    if unknown:
        raise ConfigError(f"{path}: context {name!r} has unknown keys {sorted(unknown)}")
    server, token_file = entry.get("server"), entry.get("token-file")
    return Context(name, str(server) if server else None, str(token_file) if token_file else None)


def save(contexts: Contexts) -> None:
    """Writes the file whole (a new file renamed over the old one), readable by its owner."""
    data: dict[str, Any] = {
        "current-context": contexts.current,
        "contexts": {name: c.to_yaml() for name, c in sorted(contexts.contexts.items())},
    }
    path = contexts.path
    if path is None:
        raise ConfigError(f"nowhere to keep contexts: set XDG_CONFIG_HOME, HOME or {CONFIG_ENV}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".config-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(data, f, sort_keys=False)
        os.replace(temporary, path)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from None


def set_context(
    contexts: Contexts, name: str, server: str | None, token_file: str | None
) -> Context:
    """Creates the context or changes only the fields given (as kubectl does)."""
    check_name(name)
    if server is not None and server:
        _check_server(server)
    if token_file:
        token_file = str(Path(token_file).expanduser().absolute())
    old = contexts.contexts.get(name, Context(name))
    new = replace(
        old,
        server=old.server if server is None else (server or None),
        token_file=old.token_file if token_file is None else (token_file or None),
    )
    contexts.contexts[name] = new
    return new


def _check_server(url: str) -> None:
    try:
        FleetServer(url, "")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def selected(contexts: Contexts, name: str | None) -> Context | None:
    """The context to work in: ``--context NAME``, else the current one, else none."""
    if name:
        return contexts.get(name)
    if contexts.current:
        return contexts.get(contexts.current)
    return None


def server_of(context: Context | None) -> FleetServer | None:
    """The context's fleet-server with its token; None for a broker context."""
    if context is None or not context.server:
        return None
    if not context.token_file:
        raise ConfigError(
            f"context {context.name!r} names a server but no token file: "
            f"fleetctl config set-context {context.name} --token-file FILE"
        )
    token = read_token(Path(context.token_file))
    return FleetServer(context.server, token)


def read_token(path: Path) -> str:
    try:
        with path.open() as f:
            token = f.read(MAX_TOKEN_FILE + 1).strip()
    except OSError as e:
        raise ConfigError(f"cannot read the token file {path}: {e.strerror}") from None
    if not token or len(token) > MAX_TOKEN_FILE or any(c.isspace() for c in token):
        raise ConfigError(f"the token file {path} holds no token (one line, the token alone)")
    return token
