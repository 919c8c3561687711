"""Secrets masked, control characters escaped, where text leaves a process.

docs/security.md maps its claims to these tests.

The masking itself (``vividly_tasks.worker.redaction``), the log formatters that apply it, the
settings' list of secrets, and a real product worker over Pub/Sub whose task logs and rejects
with a secret in the text. The end-to-end case of a hosted API echoing its key is in
tests/integration/lessons/test_gemini_worker.py; the CLI's escaping, with real commands, in
tests/integration/cli/test_cli.py.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
import redis
from celery import Celery

from harness.pubsub_helpers import dead_letters
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.cli.errors import CliError
from vividly_tasks.lessons.settings import Settings, secret_values
from vividly_tasks.worker import attach, detach
from vividly_tasks.worker.logs import LogFormat, apply_format
from vividly_tasks.worker.redaction import (
    MASK,
    MIN_SECRET_CHARS,
    Redactor,
    redact_exception,
    redactor_of,
)
from vividly_tasks.worker.safe_text import printable

SECRET = "s3cr3t/k+y=\u00e9\"quoted\""  # a slash, a plus, an equals sign, non-ASCII, quotes
FLOWER_PASSWORD = "flower-pw-0123"


# --- the redactor ------------------------------------------------------------------------------
def test_a_secret_is_masked_in_each_form_it_takes_in_text() -> None:
    redact = Redactor([SECRET])
    forms = [SECRET, quote(SECRET, safe=""), json.dumps(SECRET)[1:-1],
             json.dumps(SECRET, ensure_ascii=False)[1:-1], repr(SECRET)[1:-1],
             base64.b64encode(SECRET.encode()).decode()]
    for form in forms:
        assert redact(f"before {form} after") == f"before {MASK} after", form
    line = json.dumps({"message": f"upstream said {{'x-goog-api-key': '{SECRET}'}}"})
    assert SECRET not in redact(line) and json.dumps(SECRET)[1:-1] not in redact(line)


def test_short_values_are_not_masked_and_nothing_is_read_before_first_use() -> None:
    short = "x" * (MIN_SECRET_CHARS - 1)
    assert Redactor([short, ""])(f"a {short} b") == f"a {short} b"
    read: list[str] = []

    def source() -> list[str]:
        read.append("read")
        return ["long-enough-secret"]

    redact = Redactor(source)
    assert read == []
    assert redact("the long-enough-secret") == f"the {MASK}" and read == ["read"]
    redact("again")
    assert read == ["read"]


def test_an_exception_chain_is_masked_in_place_whichever_link_carries_the_secret() -> None:
    try:
        try:
            raise ValueError(f"the body quoted {SECRET}")
        except ValueError as inner:
            raise RuntimeError("the call failed", {"detail": SECRET}) from inner
    except RuntimeError as outer:
        outer.note = f"note {SECRET}"  # type: ignore[attr-defined]
        redact_exception(outer, Redactor([SECRET]))
        cause = outer.__cause__
        assert cause is not None and cause.args == (f"the body quoted {MASK}",)
        assert outer.note == f"note {MASK}"  # type: ignore[attr-defined]


def test_the_settings_name_every_secret_they_hold() -> None:
    settings = Settings(
        GEMINI_API_KEY="AIzaSy-settings-key-0001", FLOWER_BASIC_AUTH=f"operator:{FLOWER_PASSWORD}",
        broker_url="redis://u:broker%2Fpw-0002@h/0",
        result_backend="redis://h/1?password=backend-pw-0003",
        database_url="postgresql+psycopg://u:database-pw-0004@h/db",
        content_model_base_url="http://127.0.0.1:1/?key=model-url-key-0005",
    )
    values = set(secret_values(settings))
    assert {"AIzaSy-settings-key-0001", f"operator:{FLOWER_PASSWORD}", FLOWER_PASSWORD,
            "broker%2Fpw-0002", "broker/pw-0002", "backend-pw-0003", "database-pw-0004",
            "model-url-key-0005"} <= values
    assert not {"u", "h", "operator", "db"} & values


def test_attach_masks_the_apps_url_passwords_and_the_secrets_its_owner_gives() -> None:
    app = Celery("theirs", broker="redis://u:their-broker-pw@127.0.0.1:1/0",
                 backend="redis://:their-backend-pw@127.0.0.1:1/1")
    attach(app, secrets=lambda: ["their-own-api-token"], log_format=None)
    try:
        redact = redactor_of(app)
        assert redact("their-broker-pw their-backend-pw their-own-api-token") == \
            f"{MASK} {MASK} {MASK}"
    finally:
        detach(app)
    assert redactor_of(app)("their-own-api-token") == "their-own-api-token"
    app.close()


# --- log lines -------------------------------------------------------------------------------
@pytest.fixture
def captured_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger(f"tests.output_safety.{id(stream)}")
    logger.propagate = False
    logger.addHandler(logging.StreamHandler(stream))
    yield logger, stream
    logger.handlers.clear()


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_lines_mask_secrets_in_message_arguments_extras_and_tracebacks(
    captured_log: tuple[logging.Logger, io.StringIO], log_format: LogFormat,
) -> None:
    logger, stream = captured_log
    apply_format(logger, log_format, Redactor([SECRET]))
    logger.warning(f"inline {SECRET}")
    logger.warning("argument %s", SECRET, extra={"request_id": SECRET})
    try:
        try:
            raise ValueError(f"upstream body {SECRET}")
        except ValueError as exc:
            raise RuntimeError("the call failed") from exc
    except RuntimeError:
        logger.exception("a traceback")
    output = stream.getvalue()
    assert "upstream body" in output and "inline" in output and MASK in output
    for form in (SECRET, json.dumps(SECRET)[1:-1], repr(SECRET)[1:-1]):
        assert form not in output, output


def test_text_log_lines_escape_control_characters_and_keep_a_tracebacks_lines(
    captured_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured_log
    apply_format(logger, "text", Redactor())
    logger.warning("task %s received", "\x1b]0;pwned\x07\nforged line")
    try:
        raise ValueError("\x9b2J")
    except ValueError:
        logger.exception("failed")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("task \\x1b]0;pwned\\x07\\nforged line received")
    assert lines[1].endswith("failed") and lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: \\x9b2J"
    assert all(line.isprintable() for line in lines)


# --- terminal text -----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "shown"), [
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC: retitles the terminal
    ("\x9b2J", "\\x9b2J"),  # C1 CSI: clears the screen in terminals that take 8-bit controls
    ("\u202etxt.exe", "\\u202etxt.exe"),  # right-to-left override
    ("\u2066x\u2069 \u200b", "\\u2066x\\u2069 \\u200b"),  # bidi isolate, zero-width space
    ("a\r\nb\tc\x00\x7f", "a\\r\\nb\\tc\\x00\\x7f"),
    ("Photosynth\u00e8se \u5149\u5408 \\x1b", "Photosynth\u00e8se \u5149\u5408 \\x1b"),
])
def test_printable_escapes_what_drives_a_terminal_and_leaves_text_alone(
    text: str, shown: str,
) -> None:
    assert printable(text) == shown


def test_a_cli_error_quoting_a_server_is_shown_escaped() -> None:
    assert CliError("server said \x1b[2J").format_message() == "server said \\x1b[2J"


# --- a real worker -----------------------------------------------------------------------------
def test_a_product_worker_masks_its_secrets_in_task_logs_rejections_and_results(
    pubsub_project: str, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """A task's own log line, its ``Reject`` reason and an unregistered task's name carry the
    API key or Flower's password (no content pipeline in between): the text log, the
    dead-letter reasons and the stored failure show them masked, and the log shows the task's
    control characters escaped."""
    api_key = "AIzaSy-worker-test-key-0123456789"
    for name, value in {"BROKER_URL": f"pubsub://{pubsub_project}", "RESULT_BACKEND": redis_url,
                        "GEMINI_API_KEY": api_key, "LOG_FORMAT": "text",
                        "FLOWER_BASIC_AUTH": f"operator:{FLOWER_PASSWORD}"}.items():
        monkeypatch.setenv(name, value)
    worker = start_worker(concurrency=1).wait_ready()
    app = create_app()
    try:
        logged = app.send_task("tests.log_something", (f"\x1b]0;pwned\x07 key={api_key}",))
        assert logged.get(timeout=30) is None
        rejected = app.send_task("tests.reject_me", (f"upstream echoed {FLOWER_PASSWORD}",))
        # Refused by the worker's consumer, with a reason it writes itself.
        app.send_task(f"tests.{api_key}")
        letters = {letter.message.attributes["task"]: letter.message.attributes
                   for letter in dead_letters(pubsub_project, "vividly-", "vividly", expect=2)}
        with redis.Redis.from_url(redis_url) as client:
            meta = json.loads(client.get(f"celery-task-meta-{rejected.id}") or b"{}")
        # What the failure stored (its arguments, kept by result_extended, are the caller's).
        stored = json.dumps([meta["status"], meta["result"], meta["traceback"]])
    finally:
        app.close()
    reason = letters["tests.reject_me"]["dead_letter_reason"]
    assert reason == f"tests.reject_me: upstream echoed {MASK}"
    refused = letters[f"tests.{api_key}"]["dead_letter_reason"]
    assert refused.startswith(f"unregistered task 'tests.{MASK}'")
    assert "FAILURE" in stored and f"upstream echoed {MASK}" in stored
    log = worker.logs()
    assert f"task says \\x1b]0;pwned\\x07 key={MASK}" in log
    assert "\x1b]0;" not in log
    for text in (log, reason, refused, stored):
        assert api_key not in text and FLOWER_PASSWORD not in text
