"""Secrets kept out of what railguard shows: URLs and messages with their credentials hidden.

Whatever shows a configured URL, or a message that may quote one (``railguard check``, a
sample's detail and reason in logs, /status and the admin API, config errors), passes it
through here. A URL is shown as the config wrote it when that is known
(``?token=${HEALTH_TOKEN}``, never the token); in any form:

- a userinfo password shows as ``***``;
- a query (or fragment) parameter whose name looks secret (token, key, secret, password,
  auth, signature, sig, code, ...) shows its value as ``***``, unless the value is a
  ``${VAR}`` reference;
- any text equal to the value of a ``${VAR}`` the config expanded, or of one of railguard's
  own secret variables, shows as that reference (``${VAR}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, quote_plus, unquote

from monitor.model import Sample

REDACTED = "***"
MIN_VALUE = 4
"""Values shorter than this are not looked for in text: they occur by chance everywhere (a
port, a region) and are too short to be a credential. The rules on passwords and secret
parameters still hide them."""

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)", re.DOTALL)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_REFERENCES = re.compile(r"(?:\$\{[A-Za-z_][A-Za-z0-9_]*\})+")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# A parameter is secret when one of its name's words is one of these, or contains one of
# the longer ones (``access_token``, ``apiKey``, ``X-Amz-Signature``, ``client_secret``).
_SECRET_WORDS = frozenset(
    {"sig", "code", "pass", "passphrase", "pw", "pwd", "jwt", "sid", "session"}
)
_SECRET_PARTS = ("token", "key", "secret", "passw", "auth", "signature", "credential")


def secret_name(name: str) -> bool:
    """Whether a query parameter called ``name`` probably carries a credential."""
    words = [w.lower() for w in _WORDS.findall(unquote(name))]
    return any(w in _SECRET_WORDS or any(p in w for p in _SECRET_PARTS) for w in words)


def _params(text: str) -> str:
    parts = []
    for part in text.split("&"):
        name, eq, value = part.partition("=")
        if eq and value and secret_name(name) and not _REFERENCES.fullmatch(value):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """``url`` with its password and secret-named parameter values hidden (see the module
    docstring); text that is not an absolute URL comes back unchanged. Never raises."""
    match = _URL.fullmatch(url)
    if match is None:
        return url
    scheme, authority, rest = match.groups()
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password and not _REFERENCES.fullmatch(password):
            userinfo = f"{user}:{REDACTED}"
        authority = f"{userinfo}@{host}"
    before, hash_, fragment = rest.partition("#")
    path, mark, query = before.partition("?")
    if "=" in fragment:  # an implicit flow's ``#access_token=...``
        fragment = _params(fragment)
    return f"{scheme}{authority}{path}{mark}{_params(query)}{hash_}{fragment}"


class Redactor:
    """Redaction that knows the config: how its URLs were written, what each ``${VAR}`` held.

    :func:`monitor.planning.build_plan` makes one per plan; an empty one applies the rules on
    passwords and secret parameters only.
    """

    __slots__ = ("_needles", "_written")

    def __init__(
        self, values: Mapping[str, str] | None = None, written: Mapping[str, str] | None = None
    ) -> None:
        """``values``: each variable's value by name; ``written``: each expanded string ->
        the string as the config wrote it (with its ``${VAR}`` references)."""
        needles: dict[str, str] = {}
        for name, value in (values or {}).items():
            for form in (value, quote(value, safe=""), quote(value, safe="/:@"), quote_plus(value)):
                if len(form) >= MIN_VALUE:
                    needles.setdefault(form, f"${{{name}}}")
        # Longest first: a value that contains another is replaced whole.
        self._needles = sorted(needles.items(), key=lambda item: -len(item[0]))
        self._written = dict(written or {})

    def _references(self, text: str) -> str:
        for needle, reference in self._needles:
            if needle in text:
                text = text.replace(needle, reference)
        return text

    def url(self, url: str) -> str:
        """A configured URL as it may be shown: as written when known, secrets hidden."""
        written = self._written.get(url)
        return redact_url(written if written is not None else self._references(url))

    def text(self, text: str) -> str:
        """A message as it may be shown: the URLs in it redacted, no variable's value."""
        text = self._references(text)
        if "://" not in text:
            return text
        return _URL_IN_TEXT.sub(lambda m: redact_url(m[0]), text)

    def value(self, value: Any) -> Any:
        """``value`` with every string in it (in lists and mappings too) as :meth:`text`."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.value(v) for v in value)
        return value

    def sample(self, sample: Sample) -> Sample:
        """``sample`` with its reason and detail redacted (the same sample if nothing was)."""
        reason = self.text(sample.reason)
        detail = self.value(sample.detail)
        if reason == sample.reason and detail == sample.detail:
            return sample
        return replace(sample, reason=reason, detail=detail)


def redact_database_url(url: str) -> str:
    """The URL (or key=value DSN) with its password hidden: what messages and logs may name."""
    if "://" not in url:  # the key=value form
        return _DSN_PASSWORD.sub(rf"\1{REDACTED}", url)
    return redact_url(url)  # the userinfo's password, and a query's ?password=


def scrub_database_url(text: str, url: str) -> str:
    """``text`` (a driver's message) without ``url``'s password in any form: libpq quotes
    the token or the URL it could not parse, password and all."""
    text = text.replace(url, redact_database_url(url))
    for secret in sorted(_passwords(url), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"[?&]password=([^&#]*)", re.IGNORECASE)


def _passwords(url: str) -> set[str]:
    """What may be ``url``'s password, generously: as written and percent-decoded."""
    if "://" not in url:  # the key=value form
        found = [m[2] for m in _DSN_PASSWORD.finditer(url)]
    else:
        found = _QUERY_PASSWORD.findall(url)
        userinfo, at, _ = url.split("://", 1)[1].rpartition("@")  # "@" in a password too
        if at and ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    secrets = {form for secret in found for form in (secret, unquote(secret), secret.strip("'"))}
    return {secret for secret in secrets if secret}
