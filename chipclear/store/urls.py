"""Event store URLs in messages and logs: never with a password in them.

A URL is not always well formed when it reaches a message: `user:secret@host/db` (no scheme) parses as
the scheme `user` with no authority, and libpq quotes whatever it could not parse in its own errors. So
`redact` hides credentials wherever they may sit, and `scrub` takes them out of any other text.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

SECRET_OPTIONS = {"password", "passfile", "sslpassword"}
# `password=…` in a query string or a libpq `key=value` string; a quoted value may hold spaces.
SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b(?P<name>" + "|".join(sorted(SECRET_OPTIONS)) + r")\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'?|[^&\s]*)"
)
# The authority of `scheme://authority/…` or `//authority/…`, read without urlsplit, which refuses some.
AUTHORITY = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?//(?P<authority>[^/?#]*)")


class StoreURLError(ValueError):
    """A `CHIPCLEAR_EVENT_STORE` value chipclear cannot use; the message names what is wrong."""


def redact(url: str) -> str:
    """The URL with its password (in the user part or in the query) replaced by `***`."""
    if AUTHORITY.match(url) is None:
        return _redact_unparsed(url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not even a URL: say nothing of it but its scheme
        return url.split(":", 1)[0] + ":…"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if password is None and not any(name in SECRET_OPTIONS for name, _ in query):
        return url  # nothing to hide (and `sqlite:///path` keeps its three slashes)
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = [(name, "***" if name in SECRET_OPTIONS else value) for name, value in query]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def _redact_unparsed(text: str) -> str:
    """No `//authority`: whatever stands before the last `@` may be `user:password`; keep the user."""
    text = SECRET_ASSIGNMENT.sub(lambda found: f"{found['name']}=***", text)
    credentials, at, rest = text.rpartition("@")
    if at and ":" in credentials:
        return f"{credentials.split(':', 1)[0]}:***@{rest}"
    return text


def secrets_in(url: str) -> list[str]:
    """Every part of `url` that may be a password, as written and percent-decoded, longest first."""
    authority = AUTHORITY.match(url)
    credentials, at, _ = (url if authority is None else authority["authority"]).rpartition("@")
    found = [credentials.split(":", 1)[1]] if at and ":" in credentials else []
    # A raw `@` in a password: libpq splits at the first `@`, and quotes the rest as the host name.
    found += [piece for password in found for piece in password.split("@")]
    found += [match["value"].strip("'") for match in SECRET_ASSIGNMENT.finditer(url)]
    found += [unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """`text` (a driver's error, say) with `url` redacted and any password from it replaced by `***`."""
    text = text.replace(url, redact(url))
    for secret in secrets_in(url):
        text = text.replace(secret, "***")
    return text
