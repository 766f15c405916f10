"""CSRF protection for cookie sessions: one token per session, sent back with every change.

The session cookie is HttpOnly and SameSite=Strict, so another site's page cannot make the
browser send it at all in today's browsers; the token is the second lock for browsers or
paths where that does not hold. A request that changes something (any method but GET, HEAD,
OPTIONS) and is authenticated by the cookie must carry the session's token in the
``X-CSRF-Token`` header (the page's fetch calls) or a ``csrftoken`` form field (the logout
form), and must not come from another site as the browser reports it (Sec-Fetch-Site,
Origin). Requests with a bearer token need none of this: no browser adds that header by
itself.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from aiohttp import web

HEADER = "X-CSRF-Token"
FIELD = "csrftoken"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def needed(request: web.Request) -> bool:
    return request.method not in SAFE_METHODS


def same_origin(request: web.Request) -> bool:
    """Whether the browser says the request comes from this site (or says nothing)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        # Trusted first: the page's Referrer-Policy (no-referrer) makes a form's Origin "null".
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser, or an old one: the token must still match
    # Behind a proxy that ends TLS, the scheme seen here is http while the page's is https.
    return origin in (f"{request.scheme}://{request.host}", f"https://{request.host}")


def matches(expected: str, sent: str | None) -> bool:
    """Constant-time comparison, so the token cannot be guessed a character at a time."""
    return bool(sent) and hmac.compare_digest(expected.encode(), (sent or "").encode())


def sent_token(request: web.Request, form: Mapping[str, object] | None = None) -> str | None:
    header = request.headers.get(HEADER)
    if header:
        return header
    if form is not None:
        value = form.get(FIELD)
        return value if isinstance(value, str) else None
    return None
