"""A server on loopback that speaks the Gemini API's ``generateContent`` (REST, JSON), for the
real google-genai SDK to call (its ``base_url`` option; a worker's ``CONTENT_MODEL_BASE_URL``).

It records every call and answers from a script chosen by the topic in the prompt, so one
worker can be given several requests that each meet a different answer:

- ``lesson``: a valid lesson with the server's own section headings (``Server section 1: ...``)
  and token counts of about four characters a token, as the API reports them;
- ``rate_limited:N``: 429 ``RESOURCE_EXHAUSTED`` with ``Retry-After: N``;
- ``unavailable``: 503; ``hang:N``: answers after N seconds (for client timeouts);
- ``malformed``: 200 with text that is not JSON; ``off_schema``: JSON without a quiz;
- ``blocked``: the prompt blocked (``promptFeedback.blockReason = SAFETY``);
  ``withheld``: a candidate that stopped for ``SAFETY``; ``forbidden``: 403;
- ``echo_headers:CODE``: an error CODE whose message quotes the request's headers, API key
  included, as a careless proxy or gateway's error page does.

A script is a list of answers used in turn (its last one repeats).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_VERSION = "gemini-fake-001"
#: Google's status names of the codes ``echo_headers`` answers with.
ECHO_STATUS = {400: "INVALID_ARGUMENT", 503: "UNAVAILABLE"}
CHARS_PER_TOKEN = 4


@dataclass
class Call:
    at: float  # time.monotonic() when it arrived
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def prompt(self) -> str:
        return "".join(
            part.get("text", "") for content in self.body.get("contents", [])
            for part in content.get("parts", [])
        )

    @property
    def topic(self) -> str:
        match = re.search(r"Write a lesson about: (.*)", self.prompt)
        return match.group(1).strip() if match else ""


def lesson_answer(topic: str, sections: int = 3) -> dict[str, Any]:
    """A lesson of about a real one's length, recognisably the server's."""
    paragraph = (f"{topic} is explained here by the model with a definition, an everyday "
                 "example, and the reasoning that connects them, in words for the grade band.")
    return {
        "title": f"{topic}, as the model tells it",
        "introduction": f"Welcome. In this lesson we study {topic} together, step by step.",
        "objectives": [f"Define {topic}.", f"Explain how {topic} works.",
                       f"Apply {topic} to a new example."],
        "sections": [
            {
                "heading": f"Server section {number}: {topic}"[:80],
                "paragraphs": [paragraph, paragraph],
                "key_points": [f"Point {number}.1 about {topic}", f"Point {number}.2"],
                "narration": f"Section {number}. {paragraph}",
            }
            for number in range(1, sections + 1)
        ],
        "worked_example": {
            "question": f"How would you use {topic} to answer a question?",
            "steps": ["Read the question.", "Recall the definition.", "Apply it.",
                      "Check the answer."],
            "answer": "By applying the definition and checking the result.",
            "narration": f"Here is a worked example about {topic} in four steps.",
        },
        "quiz": [
            {"question": f"What is {topic}?", "answer": "What the definition says."},
            {"question": "Name one example.", "answer": "The everyday example above."},
            {"question": "How do you check an answer?", "answer": "Against the definition."},
        ],
    }


class FakeGemini:
    """``with FakeGemini.running() as server:``; ``server.base_url`` for the SDK."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.scripts: dict[str, list[str]] = {}
        self._turns: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def script(self, topic: str, *answers: str) -> None:
        """What calls about ``topic`` get, in turn (the last answer repeats)."""
        self.scripts[topic] = list(answers)

    def calls_about(self, topic: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.topic == topic]

    def _next_answer(self, call: Call) -> str:
        with self._lock:
            self.calls.append(call)
            script = self.scripts.get(call.topic, ["lesson"])
            turn = self._turns.get(call.topic, 0)
            self._turns[call.topic] = turn + 1
            return script[min(turn, len(script) - 1)]

    def answer(self, call: Call) -> tuple[int, dict[str, str], dict[str, Any]]:
        kind, _, argument = self._next_answer(call).partition(":")
        if kind == "rate_limited":
            return 429, {"Retry-After": argument or "1"}, _error(
                429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
        if kind == "unavailable":
            return 503, {}, _error(503, "UNAVAILABLE", "The model is overloaded.")
        if kind == "forbidden":
            return 403, {}, _error(403, "PERMISSION_DENIED", "Permission denied on the model.")
        if kind == "echo_headers":
            code = int(argument or 400)
            return code, {}, _error(code, ECHO_STATUS.get(code, "INVALID_ARGUMENT"),
                                    f"bad request; it carried the headers {call.headers}")
        if kind == "hang":
            time.sleep(float(argument or 5))
            kind = "lesson"
        if kind == "blocked":
            return 200, {}, {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": self._usage(call, ""), "modelVersion": MODEL_VERSION,
            }
        lesson = lesson_answer(call.topic)
        text = {
            "lesson": json.dumps(lesson),
            "malformed": '{"title": "Half a lesson", "sections": [',
            "off_schema": json.dumps({k: v for k, v in lesson.items() if k != "quiz"}),
            "withheld": "",
        }[kind]
        finish = "SAFETY" if kind == "withheld" else "STOP"
        return 200, {}, {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                            "finishReason": finish}],
            "usageMetadata": self._usage(call, text), "modelVersion": MODEL_VERSION,
        }

    @staticmethod
    def _usage(call: Call, answer: str) -> dict[str, int]:
        # The whole request counts as prompt: the schema and instructions are input tokens.
        prompt = len(json.dumps(call.body)) // CHARS_PER_TOKEN
        output = len(answer) // CHARS_PER_TOKEN
        return {"promptTokenCount": prompt, "candidatesTokenCount": output,
                "totalTokenCount": prompt + output}

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[FakeGemini]:
        fake = cls()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                call = Call(time.monotonic(), self.path, dict(self.headers),
                            json.loads(self.rfile.read(length) or b"{}"))
                status, headers, body = (
                    fake.answer(call) if self.path.endswith(":generateContent")
                    else (404, {}, _error(404, "NOT_FOUND", self.path))
                )
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in {**headers, "Content-Type": "application/json",
                                        "Content-Length": str(len(payload))}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first (``hang``)

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        fake._server = server
        thread = threading.Thread(target=server.serve_forever, name="fake-gemini", daemon=True)
        thread.start()
        try:
            yield fake
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def _error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}
