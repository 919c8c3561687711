"""Secret values masked in text that leaves a process: log lines, dead-letter reasons, stored
errors.

A ``Redactor`` holds secret values and replaces each, wherever it appears in a text and
whatever produced the text (an upstream error body that echoes the request's headers, a
traceback, a library's debug line), with ``****``. It masks the forms a value takes in such
text too: percent-encoded (in a URL), JSON- and repr-escaped (in a JSON log line, an
exception's repr) and base64 (an ``Authorization: Basic`` header of a ``user:password``).

Values shorter than ``MIN_SECRET_CHARS`` are not masked by value: masking ``abc`` would turn
every ``abc`` in every log line into ``****``, garble the logs and show where the value occurs
(GitLab refuses to mask CI variables under 8 characters for the same reason). The URL
passwords of such short values are still masked structurally, by ``mask_url_password``.

``attach(app, secrets=...)`` gives an app its redactor (``redactor_of``): the passwords of its
broker and result backend URLs, and the values its owner registers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit, urlunsplit

MASK = "****"
#: Shortest value masked wherever it appears (see the module doc).
MIN_SECRET_CHARS = 8
#: Query parameters that carry secrets in some URLs (redis-py's and libpq's ``password=``).
SECRET_QUERY_NAME = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)
#: Settings of a Celery app whose URLs may hold passwords.
APP_URL_SETTINGS = ("broker_url", "broker_read_url", "broker_write_url", "result_backend")
#: Where ``attach`` keeps an app's redactor.
REDACTOR = "_vividly_redactor"

SecretSource = Iterable[str] | Callable[[], Iterable[str]]
Redact = Callable[[str], str]


def url_secrets(url: Any) -> list[str]:
    """The password and the secret-named query values of ``url`` (nothing if it is none)."""
    if not isinstance(url, str) or "://" not in url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
    except ValueError:  # unreadable: mask_url_password shows none of it
        return [url]
    found += [value for name, value in parse_qsl(parts.query, keep_blank_values=True)
              if SECRET_QUERY_NAME.search(name)]
    return [value for secret in found if secret for value in {secret, unquote(secret)}]


def mask_url_password(value: Any) -> Any:
    """``scheme://user:secret@host?password=secret`` becomes
    ``scheme://user:****@host?password=****``; other values pass unchanged."""
    if not isinstance(value, str) or "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:  # not a URL we can read: show none of it
        return f"{value.partition('://')[0]}://{MASK}"
    pairs = parts.query.split("&") if parts.query else []
    secret_pairs = [p for p in pairs if SECRET_QUERY_NAME.search(p.partition("=")[0])]
    if not password and not secret_pairs:
        return value
    if password:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}")
    query = "&".join(
        f"{p.partition('=')[0]}={MASK}" if p in secret_pairs else p for p in pairs
    )
    return urlunsplit(parts._replace(query=query))


def app_url_secrets(app: Any) -> list[str]:
    """The secrets in a Celery app's broker and result backend URLs (failover lists too)."""
    found: list[str] = []
    for name in APP_URL_SETTINGS:
        value = app.conf.get(name)
        for url in value.split(";") if isinstance(value, str) else value or ():
            found += url_secrets(url)
    return found


def encodings(value: str) -> set[str]:
    """``value`` as it appears in a URL, a JSON string, a repr, or base64."""
    return {
        value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1],
        base64.b64encode(value.encode()).decode(),
    }


class Redactor:
    """Masks secret values in text: ``redactor(text)``.

    The values come from ``sources``: lists, or callables read once, on first use (so an app
    configured lazily stays lazy until its worker starts). ``resolve()`` reads them at once.
    """

    def __init__(self, *sources: SecretSource) -> None:
        self._sources = sources
        self._pattern: re.Pattern[str] | None = None
        self._resolved = False

    def resolve(self) -> Redactor:
        """Read the sources now (a worker does, as it starts; not inside a log call)."""
        if not self._resolved:
            values = {value for source in self._sources
                      for value in (source() if callable(source) else source)
                      if isinstance(value, str) and len(value) >= MIN_SECRET_CHARS}
            forms = sorted({form for value in values for form in encodings(value)},
                           key=len, reverse=True)  # the longest first: one masks it whole
            # Assigned at once, not under a lock: a lock held across a fork deadlocks children.
            self._pattern = re.compile("|".join(map(re.escape, forms))) if forms else None
            self._resolved = True
        return self

    def __call__(self, text: str) -> str:
        pattern = self.resolve()._pattern
        return pattern.sub(MASK, text) if pattern is not None else text


def app_redactor(app: Any, secrets: SecretSource = ()) -> Redactor:
    """A redactor of ``app``'s URL passwords and ``secrets``."""
    return Redactor(lambda: app_url_secrets(app), secrets)


def redactor_of(app: Any) -> Redactor:
    """The redactor ``attach`` gave ``app``; else one of its URL passwords alone."""
    found = getattr(app, REDACTOR, None)
    return found if isinstance(found, Redactor) else app_redactor(app)


def redact_exception(exc: BaseException, redact: Redact) -> None:
    """Mask, in place, ``exc`` and every exception it was raised from or during: their
    arguments and text attributes. A traceback, a repr or a result stored from them then shows
    no secret, whichever exception in the chain carried it (an SDK error quoting a response
    body is usually the ``__cause__`` of the error that is raised)."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
        for name, value in list(getattr(current, "__dict__", {}).items()):
            if isinstance(value, str):
                setattr(current, name, redact(value))
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


@contextlib.contextmanager
def secrets_masked(redact: Redact) -> Iterator[None]:
    """Whatever escapes the block leaves with its secrets masked (``redact_exception``)."""
    try:
        yield
    except BaseException as exc:
        redact_exception(exc, redact)
        raise
