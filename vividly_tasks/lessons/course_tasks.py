"""A course on Celery: its lessons are the header of a chord whose callback builds its index.

``submit_course`` writes the course and its requests in one transaction, then publishes one
chord: ``vividly.generate_content(request_id, course_id=...)`` per lesson (task id = request
id, as for a single submit) and ``vividly.build_course(course_id)`` as the callback. Over
Pub/Sub the header goes out pipelined (``publish_in_flight``): each publish returns once
queued, the transport confirms them in the background, and the submit waits for every
confirmation (``flush_publishes``) before it calls a request ``queued``; the transport's
``on_publish_confirmed`` hook says which, so a publish that failed leaves exactly its request
``pending`` with the reason (``vividly course resubmit`` sends it again).

**A failed lesson never blocks the course.** Celery runs a chord's callback only when every
header task succeeded: a header task that raises makes the chord call its errbacks instead, and
one that is rejected (``Reject``, which ``generate_content`` raises to dead-letter a request
that failed for good) stores no result at all, so the chord would wait for it forever. So:

- A lesson of a course ends in a state the chord accepts. ``generate_content`` given a
  ``course_id`` returns its failure as its result (``{"outcome": "failed", "detail": reason,
  ...}``) where it would otherwise reject the message: the request is ``failed`` with its
  reason in the row either way, and the course, not the dead-letter topic, is where someone
  acts on it (``vividly course resubmit``). Retries are unchanged: a retry keeps its place in
  the chord and the chord waits for its end.
- The index is built from the database rows, never from the chord's results
  (``course_index``), so a failure is listed with the reason its row holds, and a
  resubmission, which points the lesson's position at a new request and publishes a chord of
  its own with the same callback, updates the index when it finishes.
- The callback is also the chord's errback, so a header task that still raised (a bug, a
  worker's hard time limit) gets the index built, that lesson listed as its row says.

What no chord can report is a message that never finishes: one that Pub/Sub dead-lettered
after ``max_delivery_attempts`` deliveries that all lost their worker. Its row stays at work,
the course's status says so, and the callback never runs; a resubmission of the course's
failed lessons builds the index again, and ``vividly course status`` reads the rows whatever
the chord did. A callback that finds lessons still at work (a resubmission overlapping the
first run) writes the index as it stands and builds it again ``BUILD_RETRY_SECONDS`` later,
up to ``BUILD_RETRIES`` times.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Task, shared_task
from celery.canvas import Signature, chord, group

from vividly_tasks.lessons.course_index import CourseIndexBuilder
from vividly_tasks.lessons.courses import CourseRepository, LessonLine
from vividly_tasks.lessons.errors import TransientError
from vividly_tasks.lessons.models import Course
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.status import Status
from vividly_tasks.lessons.tasks import GENERATE_CONTENT, content_services, transient_countdown

logger = logging.getLogger(__name__)

BUILD_COURSE = "vividly.build_course"
#: Unconfirmed publishes a course submit keeps in flight over Pub/Sub.
PUBLISH_IN_FLIGHT = 1000
#: A callback that found lessons at work builds again this much later, at most this often.
BUILD_RETRY_SECONDS = 30.0
BUILD_RETRIES = 120


@shared_task(bind=True, name=BUILD_COURSE)  # type: ignore[untyped-decorator]
def build_course(self: Task, course_id: str) -> dict[str, Any]:
    """Build a course's index from its rows (the chord's callback and errback); returns its
    totals and the index's URIs."""
    settings: Settings = self.app.settings
    services = content_services(settings)
    builder = CourseIndexBuilder(CourseRepository(services.database), services.storage)
    try:
        index, finished = builder.build(course_id)
    except LookupError:
        logger.error("course %s does not exist; no index built", course_id)
        return {"course_id": course_id, "built": False}
    except TransientError as exc:
        retries = self.request.retries
        if retries >= settings.content_max_retries:
            raise
        raise self.retry(exc=exc, countdown=transient_countdown(settings, retries, exc),
                         max_retries=retries + 1) from exc
    course = builder.courses.get(course_id)
    logger.info("course %s: index built (%d lessons, %d failed, %d at work)", course_id,
                index.totals.lessons, index.totals.failed, index.totals.at_work,
                extra={"course_id": course_id})
    if not finished and self.request.retries < BUILD_RETRIES and not self.request.is_eager:
        raise self.retry(countdown=BUILD_RETRY_SECONDS, max_retries=BUILD_RETRIES)
    return {"course_id": course_id, "built": True, "totals": index.totals.as_dict(),
            "index": dict(course.index_artifacts or {}) if course else {}}


@dataclass
class Publication:
    """What a course submit or resubmit sent: the chord, and how it went."""

    course_id: str
    request_ids: list[str]
    chord_id: str
    build_task_id: str
    #: Seconds from the first publish until every one was confirmed (or failed).
    publish_seconds: float = 0.0
    pipelined: bool = False
    #: Requests whose message was not confirmed: left ``pending`` with the reason.
    unsent: list[str] = field(default_factory=list)
    error: str | None = None


def course_chord(app: Any, course_id: str, request_ids: Sequence[str],
                 chord_id: str) -> tuple[chord, str]:
    """The chord of a course's lessons (task id = request id) and its index's callback,
    which is also its errback; returns it and the callback's task id."""
    build = app.signature(BUILD_COURSE, args=(course_id,), immutable=True)
    build_task_id = str(uuid.uuid4())
    header = group(
        [app.signature(GENERATE_CONTENT, args=(request_id,), kwargs={"course_id": course_id},
                       immutable=True).set(task_id=request_id) for request_id in request_ids],
        task_id=chord_id, app=app,
    )
    body: Signature = build.clone().set(task_id=build_task_id)
    body.on_error(build.clone())
    return chord(header, body, app=app), build_task_id


class ConfirmedTasks:
    """The ``on_publish_confirmed`` hook of an app's pipelined publishes: the task ids
    Pub/Sub confirmed since ``clear``."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, labels: list[str]) -> None:
        with self._lock:  # called from the transport's sender threads
            self.ids.update(label.rpartition("[")[2].rstrip("]") for label in labels)

    def clear(self) -> None:
        with self._lock:
            self.ids.clear()


def pipelined_publishing(app: Any) -> ConfirmedTasks | None:
    """Turn on the transport's pipelined mode (``publish_in_flight``) for ``app``, which must
    not have published yet (a connection keeps the options it was made with); the hook that
    notes what Pub/Sub confirmed, or None where the broker is not Pub/Sub."""
    if not str(app.conf.broker_url or "").startswith("pubsub://"):
        return None
    options = dict(app.conf.broker_transport_options or {})
    hook = options.get("on_publish_confirmed")
    if not isinstance(hook, ConfirmedTasks):
        hook = ConfirmedTasks()
        app.conf.broker_transport_options = {
            **options, "publish_in_flight": PUBLISH_IN_FLIGHT, "on_publish_confirmed": hook,
        }
    return hook


def publish(app: Any, courses: CourseRepository, course_id: uuid.UUID,
            request_ids: Sequence[uuid.UUID], chord_id: str) -> Publication:
    """Send the chord, wait for the broker to have every message, mark what it has
    ``queued`` and leave the rest ``pending`` with the reason."""
    ids = [str(request_id) for request_id in request_ids]
    confirmed = pipelined_publishing(app)
    if confirmed is not None:
        confirmed.clear()
    canvas, build_task_id = course_chord(app, str(course_id), ids, chord_id)
    courses.set_chord(course_id, chord_id, build_task_id)
    outcome = Publication(str(course_id), ids, chord_id, build_task_id,
                          pipelined=confirmed is not None)
    started = time.monotonic()
    try:
        canvas.apply_async()
        with app.producer_or_acquire() as producer:
            flush = getattr(producer.channel, "flush_publishes", None)
            if flush is not None:
                flush()
    except Exception as exc:
        outcome.error = f"enqueue failed: {type(exc).__name__}: {exc}"
        logger.error("course %s: %s", course_id, outcome.error)
    outcome.publish_seconds = time.monotonic() - started
    if outcome.error is None:
        sent = ids
    else:
        sent = [request_id for request_id in ids
                if confirmed is not None and request_id in confirmed.ids]
    outcome.unsent = [request_id for request_id in ids if request_id not in set(sent)]
    courses.mark_queued([uuid.UUID(request_id) for request_id in sent])
    if outcome.unsent:
        courses.record_enqueue_error([uuid.UUID(request_id) for request_id in outcome.unsent],
                                     outcome.error or "enqueue failed")
    return outcome


def submit_course(app: Any, services: ContentServices, lessons: Sequence[LessonLine], *,
                  name: str, source: str | None = None) -> tuple[Course, Publication]:
    """Create the course and its requests, then publish its chord (``publish``)."""
    courses = CourseRepository(services.database)
    course, request_ids = courses.create(name=name, source=source, lessons=lessons)
    return course, publish(app, courses, course.id, request_ids, chord_id=str(course.id))


def resubmit_course(app: Any, services: ContentServices, course_id: uuid.UUID,
                    positions: Sequence[int] | None = None) -> Publication | None:
    """New requests for ``positions`` (default: every failed lesson, and any never
    enqueued), published as a chord with the same callback; None when there is none."""
    courses = CourseRepository(services.database)
    if positions is None:
        positions = [entry.position for entry in courses.entries(course_id)
                     if entry.request.status == Status.FAILED
                     or (entry.request.status == Status.PENDING and entry.request.error)]
    if not positions:
        return None
    new_ids = courses.replace(course_id, positions)
    return publish(app, courses, course_id, new_ids, chord_id=str(uuid.uuid4()))
