"""The browser session's rules, decided in pure code: cookies, CSRF tokens, headers.

A signed-in browser holds, in an HttpOnly, SameSite=Strict cookie scoped to
``/app``, an ordinary compute access token issued by the service's one
client-credentials check (:func:`service.routes_auth.exchange`): the session
expires with the token, and signing out deletes the token server-side.

Forms carry a CSRF token. Before sign-in it is a random value that must equal
the one in a login cookie (double submit); after sign-in it is an HMAC of the
session token, so only a page that could read the session can produce it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse

SESSION_COOKIE = "ca_session"
LOGIN_COOKIE = "ca_login"
COOKIE_PATH = "/app"
LOGIN_COOKIE_TTL_S = 60 * 60
MAX_FIELD_CHARS = 1024

# No inline script or style, nothing from another origin; inline <svg> charts
# use presentation attributes, which a CSP does not govern.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def session_csrf(session_token: str) -> str:
    """The CSRF token of the forms of one session: derived, so nothing more is stored."""
    return hmac.new(session_token.encode(), b"compute-agent web form", hashlib.sha256).hexdigest()


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Both present and equal, compared in constant time."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def cookie_options(max_age: int, secure: bool) -> dict:
    """How every web app cookie is set: unreadable by scripts, never sent cross-site."""
    return {
        "max_age": max_age,
        "expires": max_age,
        "path": COOKIE_PATH,
        "httponly": True,
        "samesite": "strict",
        "secure": secure,
    }


def form_fields(raw: bytes) -> dict[str, str]:
    """An urlencoded form as single values, each cut to ``MAX_FIELD_CHARS``."""
    pairs = urllib.parse.parse_qsl(raw.decode(errors="replace"), keep_blank_values=True)
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value[:MAX_FIELD_CHARS])
    return fields
