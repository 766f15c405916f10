"""Control-interface authorisation as the Ankaios agent performs it.

Follows ``agent/src/control_interface/authorizer.rs``, ``authorizer/path_pattern.rs`` and
``authorizer/rules.rs`` of Ankaios 1.0: only the request's masks are checked, never its
payload; default deny; an empty mask list counts as the single empty path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Authorizer"]

_WILDCARD = "*"


def _sections(path: str) -> list[str]:
    return [] if path == "" else path.split(".")


def _zip_match(rule: Sequence[str], path: Sequence[str]) -> bool:
    """Compare over the overlapping prefix; a rule without sections never matches."""
    if not rule:
        return False
    return all(r in (_WILDCARD, p) for r, p in zip(rule, path, strict=False))


def _allow_matches(rule: Sequence[str], path: Sequence[str]) -> bool:
    # A rule longer than the path only matches when it starts with "*"; this is what lets
    # a lone "*" allow the empty path (full state / full replacement).
    if len(rule) > len(path) and (not rule or rule[0] != _WILDCARD):
        return False
    return _zip_match(rule, path)


def _deny_matches(rule: Sequence[str], path: Sequence[str]) -> bool:
    # Both directions: denying a.b.c also denies a.b, a and the empty path.
    return _zip_match(rule, path)


def _log_rule_matches(patterns: Sequence[str], workload_name: str) -> bool:
    """Name patterns: exact, ``*``, or one ``*`` with prefix/suffix.

    Quirk kept from Ankaios: the first pattern containing a ``*`` (other than a lone
    ``*``) decides; later patterns of the same rule are not consulted.
    """
    for pattern in patterns:
        if pattern in (workload_name, _WILDCARD):
            return True
        if _WILDCARD in pattern:
            pos = pattern.index(_WILDCARD)
            prefix, suffix = pattern[:pos], pattern[pos + 1 :]
            return (
                workload_name.startswith(prefix)
                and workload_name.endswith(suffix)
                and len(prefix) + len(suffix) <= len(workload_name)
            )
    return False


@dataclass
class Authorizer:
    """Rules of one workload, split by kind the way the agent splits them."""

    allow_read: list[list[list[str]]] = field(default_factory=list)
    allow_write: list[list[list[str]]] = field(default_factory=list)
    deny_read: list[list[list[str]]] = field(default_factory=list)
    deny_write: list[list[list[str]]] = field(default_factory=list)
    log_allow: list[list[str]] = field(default_factory=list)
    log_deny: list[list[str]] = field(default_factory=list)

    @classmethod
    def from_tree(cls, access: Mapping[str, Any] | None) -> Authorizer:
        """Build from ``{allowRules, denyRules}``; ``filterMask`` (v0.1) is accepted too."""
        auth = cls()
        access = access or {}
        for key, read, write, logs in (
            ("allowRules", auth.allow_read, auth.allow_write, auth.log_allow),
            ("denyRules", auth.deny_read, auth.deny_write, auth.log_deny),
        ):
            for rule in access.get(key) or []:
                kind = rule.get("type")
                if kind == "LogRule":
                    logs.append([str(n) for n in rule.get("workloadNames") or []])
                    continue
                if kind != "StateRule":
                    continue
                masks = rule.get("filterMasks", rule.get("filterMask")) or []
                patterns = [_sections(str(m)) for m in masks]
                op = rule.get("operation")
                if op in ("Read", "ReadWrite"):
                    read.append(patterns)
                if op in ("Write", "ReadWrite"):
                    write.append(patterns)
        return auth

    @staticmethod
    def _check_state(
        masks: Sequence[str], allow: list[list[list[str]]], deny: list[list[list[str]]]
    ) -> bool:
        for mask in list(masks) or [""]:
            path = _sections(mask)
            if not any(_allow_matches(p, path) for rule in allow for p in rule):
                return False
            if any(_deny_matches(p, path) for rule in deny for p in rule):
                return False
        return True

    def authorize(self, request: Any) -> bool:
        """Whether the agent would forward ``request`` (an ``ank_base.Request``)."""
        kind = request.WhichOneof("RequestContent")
        if kind == "completeStateRequest":
            return self._check_state(
                request.completeStateRequest.fieldMask, self.allow_read, self.deny_read
            )
        if kind == "updateStateRequest":
            return self._check_state(
                request.updateStateRequest.updateMask, self.allow_write, self.deny_write
            )
        if kind == "logsRequest":
            names = [n.workloadName for n in request.logsRequest.workloadNames]
            if not all(any(_log_rule_matches(r, n) for r in self.log_allow) for n in names):
                return False
            return not any(_log_rule_matches(r, n) for n in names for r in self.log_deny)
        # Cancel requests are always allowed; a request without content is denied.
        return kind in ("logsCancelRequest", "eventsCancelRequest")
