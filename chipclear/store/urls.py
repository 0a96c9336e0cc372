"""Event store URLs in messages and logs: never with a password in them."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_OPTIONS = {"password", "passfile", "sslpassword"}


class StoreURLError(ValueError):
    """A `CHIPCLEAR_EVENT_STORE` value chipclear cannot use; the message names what is wrong."""


def redact(url: str) -> str:
    """The URL with its password (in the user part or in the query) replaced by `***`."""
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
