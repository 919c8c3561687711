"""Courses without a worker: reading a course file (every bad line named, nothing created from
a bad file), the repository's positions and replacements, and the index's rendering and totals.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from vividly_tasks.cli import cli
from vividly_tasks.cli.exit_codes import RET_INVALID
from vividly_tasks.lessons.course_index import (
    CourseIndex,
    IndexLine,
    Totals,
    price_of,
    render_html,
    render_markdown,
)
from vividly_tasks.lessons.courses import (
    CourseFileError,
    CourseRepository,
    fingerprint,
    parse_course_text,
    read_course_file,
)
from vividly_tasks.lessons.database import ContentDatabase
from vividly_tasks.lessons.models import ContentRequest, Course
from vividly_tasks.lessons.repository import ContentRepository


def test_csv_and_json_lines_give_the_same_lessons_in_order(tmp_path: Path) -> None:
    csv_file = tmp_path / "unit.csv"
    csv_file.write_text(
        "\ufeffTopic,Modality,Grade_Level,Subject\n"
        "Fractions,text,4,Mathematics\n\n"
        '"Tides, and the moon",video,,\n', encoding="utf-8")
    jsonl_file = tmp_path / "unit.jsonl"
    jsonl_file.write_text(
        '{"topic": "Fractions", "modality": "text", "grade": 4, "subject": "Mathematics"}\n'
        "\n"
        '{"topic": "Tides, and the moon", "modality": "video"}\n', encoding="utf-8")
    from_csv = read_course_file(csv_file)
    from_jsonl = read_course_file(jsonl_file)
    assert [(x.topic, x.modality, x.grade, x.subject) for x in from_csv] == [
        ("Fractions", "text", "4", "Mathematics"), ("Tides, and the moon", "video", None, None),
    ]
    assert [(x.topic, x.modality, x.grade, x.subject) for x in from_jsonl] == [
        (x.topic, x.modality, x.grade, x.subject) for x in from_csv]
    assert [x.line for x in from_csv] == [2, 4] and [x.line for x in from_jsonl] == [1, 3]


@pytest.mark.parametrize(("text", "file_format", "problems"), [
    ("topic,modality\nFractions,txt\n,text\nAtoms,video\n", "csv",
     ["line 2: modality 'txt' is not one of text, video", "line 3: topic is empty"]),
    ("topic,grade\nFractions,4\n", "csv", ["line 1: the header row has no modality column"]),
    ("topic,modality,grade\nFractions,text,13\nAtoms,text,4,extra\n", "csv",
     ["line 2: grade level '13' is not K or 1-12", "line 3: 4 cells; the header has 3"]),
    ('{"topic": "Atoms", "modality": "text"}\n{"topic": \n["a"]\n'
     '{"topic": "Atoms", "modality": "text", "level": 3}\n', "jsonl",
     ["line 2: not JSON", "line 3: a JSON list, not an object", "line 4: unknown field 'level'"]),
    ("", "csv", ["no lessons"]),
])
def test_every_bad_line_is_named(text: str, file_format: str, problems: list[str]) -> None:
    with pytest.raises(CourseFileError) as caught:
        parse_course_text(text, file_format=file_format)
    assert len(caught.value.problems) == len(problems)
    for found, expected in zip(caught.value.problems, problems, strict=True):
        assert found.startswith(expected), (found, expected)


def test_an_invalid_file_creates_nothing(tmp_path: Path) -> None:
    course_file = tmp_path / "unit.csv"
    course_file.write_text("topic,modality\nFractions,text\nAtoms,audio\n" + "x" * 300
                           + ",text\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["course", "submit", str(course_file)])
    assert result.exit_code == RET_INVALID, result.output
    assert "nothing created" in result.stderr
    assert "line 3: modality 'audio'" in result.stderr
    assert "line 4: topic is 300 characters long" in result.stderr
    path = tmp_path / "data" / "vividly.sqlite"  # the embedded default database
    if not path.exists():
        return  # not even opened
    database = ContentDatabase(f"sqlite:///{path}")
    database.migrate()
    try:
        with database.session() as session:
            assert session.scalar(select(func.count()).select_from(Course)) == 0
            assert session.scalar(select(func.count()).select_from(ContentRequest)) == 0
    finally:
        database.dispose()


@pytest.fixture
def courses(tmp_path: Path) -> CourseRepository:
    database = ContentDatabase(f"sqlite:///{tmp_path / 'content.sqlite'}")
    database.migrate()
    return CourseRepository(database)


def test_positions_keep_their_order_and_a_replacement_keeps_what_it_replaced(
    courses: CourseRepository,
) -> None:
    lessons = parse_course_text("topic,modality\nA,text\nB,video\nC,text\n")
    course, ids = courses.create(name="Unit", source="unit.csv", lessons=lessons)
    entries = courses.entries(course.id)
    assert [(e.position, e.request.topic, e.request.status) for e in entries] == [
        (1, "A", "pending"), (2, "B", "pending"), (3, "C", "pending")]
    courses.mark_queued(ids)
    before = fingerprint(courses.entries(course.id))
    requests = ContentRepository(courses.database)
    assert requests.fail(ids[1], "PermanentFailure: the renderer refused it")
    assert fingerprint(courses.entries(course.id)) != before
    with pytest.raises(ValueError, match="lesson 1 is queued"):
        courses.replace(course.id, [1])
    [new_id] = courses.replace(course.id, [2])
    entry = courses.entries(course.id)[1]
    assert (entry.request.id, entry.request.topic, entry.request.modality) == (new_id, "B",
                                                                              "video")
    assert entry.lesson.replaced == [{"request_id": str(ids[1]),
                                      "error": "PermanentFailure: the renderer refused it"}]
    with pytest.raises(LookupError):
        courses.replace(course.id, [4])


def line(position: int, **fields: object) -> IndexLine:
    values: dict[str, object] = {
        "position": position, "request_id": str(uuid.uuid4()), "topic": f"Topic {position}",
        "modality": "text", "grade": "4", "subject": "Science", "status": "completed",
        "title": None, "error": None, "links": {}, "video_seconds": None, "replaced": 0,
    }
    return IndexLine(**(values | fields))  # type: ignore[arg-type]


def test_the_index_lists_lessons_in_order_escaped_with_failures_and_totals() -> None:
    lines = [
        line(1, title="Fractions | *halves*", links={"lesson.html": "../../a/lesson.html",
                                                     "lesson.md": "../../a/lesson.md"}),
        line(2, modality="video", video_seconds=90.0, title="<b>Tides</b>",
             links={"lesson.html": "../../b/lesson.html", "lesson.mp4": "../../b/lesson.mp4"}),
        line(3, status="failed", error="PermanentFailure: blocked\x1b[2J <script>"),
    ]
    totals = Totals(lessons=3, completed=2, failed=1, videos=1, video_seconds=90.0,
                    prompt_tokens=1_000_000, output_tokens=1_000_000, cost_usd=2.80)
    index = CourseIndex(str(uuid.uuid4()), "Unit [3]", "unit.csv", lines, totals)
    markdown = render_markdown(index)
    rows = [row for row in markdown.splitlines() if row.startswith("| ") and row[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 2", "| 3"]
    assert "[Fractions \\| \\*halves\\*](../../a/lesson.html)" in rows[0]
    assert "[mp4](../../b/lesson.mp4)" in rows[1] and "completed (1.5 min)" in rows[1]
    assert "- 3 lessons: 2 completed, 1 failed, 0 at work" in markdown
    assert "- 1 video, 1.5 minutes" in markdown and "cost $2.8000" in markdown
    assert "## Failures" in markdown and "Lesson 3, Topic 3" in markdown
    html = render_html(index)
    assert "&lt;b&gt;Tides&lt;/b&gt;" in html and "<script>" not in html
    assert html.index("Topic 3") > html.index("Tides") > html.index("Fractions")


def test_prices_by_the_longest_known_model_name() -> None:
    assert price_of("gemini-2.5-flash") == (0.30, 2.50)
    assert price_of("models/gemini-2.5-flash-lite-001") == (0.10, 0.40)
    assert price_of("someone-elses-model") is None
    totals = Totals()
    request = ContentRequest(model_name="gemini-2.5-flash", prompt_tokens=820,
                             output_tokens=680)
    totals.spend(request)
    totals.spend(ContentRequest(model_name="other", prompt_tokens=1, output_tokens=1))
    assert totals.cost_usd == pytest.approx((820 * 0.30 + 680 * 2.50) / 1e6)
    assert totals.unpriced_models == {"other"} and totals.prompt_tokens == 821
    assert json.loads(json.dumps(totals.as_dict()))["unpriced_models"] == ["other"]
