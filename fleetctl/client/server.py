"""fleet-server's API for fleetctl: a small typed HTTP client on the standard library.

Used when the current context names a server (fleetctl/client/contexts.py): commands read
the inventory (``/api/v1/cars``, with label selectors) and send requests to cars through the
server, which answers each with the car's own reply and records it in its audit trail. No
third-party HTTP library: fleetctl stays as light as it is for the broker.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# Listings are read in pages of this many cars (the API's maximum).
PAGE = 1000
DEFAULT_TIMEOUT = 30.0
# An error body is read up to this much; more is not an error message.
MAX_ERROR_BODY = 64 * 1024


class ServerError(Exception):
    """fleet-server could not be reached, or answered with an error; one line."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Reply:
    """The server's answer to a request sent to a car: the car's reply (or the server's
    error), the HTTP status and the request id the server gave it."""

    status: int
    data: Any
    request_id: str | None

    @property
    def error(self) -> tuple[str, str] | None:
        """(code, message) when the answer is an error, the car's or the server's."""
        if isinstance(self.data, dict) and isinstance(self.data.get("error"), dict):
            error = self.data["error"]
            return str(error.get("code", "")), str(error.get("message", ""))
        if self.status >= 400:
            return "HTTP_" + str(self.status), "fleet-server answered " + str(self.status)
        return None


class FleetServer:
    """One fleet-server, with the bearer token of the context."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: str | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"the server is an http:// or https:// URL, not {url!r}")
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._context = (
            ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" else None
        )

    # -- the inventory ------------------------------------------------------------------

    def cars(self, selector: str | None = None, online: bool | None = None) -> list[dict[str, Any]]:
        """Every car matching, in VIN order (all pages)."""
        found: list[dict[str, Any]] = []
        while True:
            query: dict[str, str] = {"limit": str(PAGE), "offset": str(len(found))}
            if selector:
                query["selector"] = selector
            if online is not None:
                query["online"] = "true" if online else "false"
            page = self.get_json("/api/v1/cars", query)
            items = page.get("items", []) if isinstance(page, dict) else []
            found.extend(items)
            if not items or len(found) >= int(page.get("total", 0)):
                return found

    def car(self, vin: str) -> dict[str, Any] | None:
        """One car, or None when the server knows no car with this VIN."""
        try:
            data = self.get_json(f"/api/v1/cars/{_quote(vin)}")
        except ServerError as e:
            if e.status == 404:
                return None
            raise
        return data if isinstance(data, dict) else None

    def set_labels(self, vin: str, labels: Mapping[str, str | None]) -> dict[str, Any]:
        status, data, _ = self._call(
            "PATCH",
            f"/api/v1/cars/{_quote(vin)}/labels",
            json.dumps(dict(labels)).encode(),
            "application/json",
        )
        if status >= 400:
            raise _error(status, data)
        return data if isinstance(data, dict) else {}

    # -- requests to a car ----------------------------------------------------------------

    def send(self, vin: str, operation: str, body: bytes, content_type: str) -> Reply:
        """``operation`` as in the API's path: manifest/apply, state, history, ...; the
        answer as it came, an error included (the car's code is kept)."""
        status, data, request_id = self._call(
            "POST", f"/api/v1/cars/{_quote(vin)}/{operation}", body, content_type
        )
        if status in (401, 403):
            raise _error(status, data)
        return Reply(status, data, request_id)

    def logs(self, vin: str, request: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """The car's log batches as they come (the API streams NDJSON)."""
        url = f"{self.url}/api/v1/cars/{_quote(vin)}/logs"
        body = json.dumps(dict(request)).encode()
        req = self._request("POST", url, body, "application/json")
        try:
            response = urllib.request.urlopen(req, timeout=self.timeout, context=self._context)  # noqa: S310 - http(s) checked above
        except urllib.error.HTTPError as e:
            raise _error(e.code, _json(e.read(MAX_ERROR_BODY))) from None
        except (urllib.error.URLError, OSError) as e:
            raise self._unreachable(e) from None
        with response:
            for line in response:
                if line.strip():
                    data = _json(line)
                    if isinstance(data, dict):
                        yield data

    # -- plumbing -------------------------------------------------------------------------

    def get_json(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` (e.g. /api/v1/rollouts); ServerError for an error answer."""
        if query:
            path += "?" + urllib.parse.urlencode(query)
        status, data, _ = self._call("GET", path)
        if status >= 400:
            raise _error(status, data)
        return data

    def post_json(self, path: str, body: Any = None) -> Any:
        """POST a JSON body to ``path``; ServerError for an error answer."""
        payload = b"" if body is None else json.dumps(body).encode()
        status, data, _ = self._call("POST", path, payload, "application/json")
        if status >= 400:
            raise _error(status, data)
        return data

    def _request(
        self, method: str, url: str, body: bytes | None, content_type: str | None
    ) -> urllib.request.Request:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        return urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 - http(s) checked in __init__

    def _call(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, Any, str | None]:
        """The status, the JSON answer (None if not JSON) and the server's request id."""
        req = self._request(method, self.url + path, body, content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._context) as r:  # noqa: S310 - http(s) checked above
                return r.status, _json(r.read()), r.headers.get("X-Request-Id")
        except urllib.error.HTTPError as e:
            with e:
                return e.code, _json(e.read(MAX_ERROR_BODY)), e.headers.get("X-Request-Id")
        except (urllib.error.URLError, OSError) as e:
            raise self._unreachable(e) from None

    def _unreachable(self, error: Exception) -> ServerError:
        reason = getattr(error, "reason", error)
        return ServerError(f"cannot reach fleet-server at {self.url}: {reason}")


def _quote(vin: str) -> str:
    return urllib.parse.quote(vin, safe="")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError):
        return None


def _error(status: int, data: Any) -> ServerError:
    code, message = "HTTP_" + str(status), f"fleet-server answered {status}"
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = str(data["error"].get("code", code))
        message = str(data["error"].get("message", message))
    return ServerError(f"fleet-server: {code}: {message}", status, code)
