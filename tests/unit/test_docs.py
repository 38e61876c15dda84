"""The docs say what the code does, where a test can tell: the README's quick start names commands that
exist, the span reference names attributes the code sets, and every link between the pages leads
somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workflows.cli import build_parser, main
from workflows.engine import _ENTITY_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted([README, *DOCS.glob("*.md")])
SOURCES = sorted(
    path for package in ("tracing", "workflows", "workers") for path in (ROOT / package).rglob("*.py")
)
# The reference tables: (page, section) whose last column lists span attributes.
REFERENCE_TABLES = (
    ("tracing.md", "## Span and attribute reference"),
    ("celery.md", "## What you get"),
)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`]+)`")
_ATTRIBUTE = re.compile(r"[a-z_]+(?:\.[a-z_]+)+")


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    start = text.index(heading + "\n")
    level = heading.split(" ", 1)[0]
    rest = text[start + len(heading) :]
    found = re.search(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)
    return rest[: found.start()] if found else rest


def _without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def quick_start_commands() -> set[tuple[str, ...]]:
    """Every ``tracehook COMMAND [SUBCOMMAND]`` the README's quick start shows, in code or in prose."""
    section = _section(README.read_text(encoding="utf-8"), "## Quick start")
    found: set[tuple[str, ...]] = set()
    for match in re.finditer(r"\btracehook ([a-z]+)(?: ([a-z]+))?", section):
        command, sub = match.groups()
        found.add((command, sub) if command == "dlq" and sub else (command,))
    return found


def _commands() -> dict[str, object]:
    actions = [a for a in build_parser()._actions if a.dest == "command"]
    return dict(actions[0].choices or {})  # type: ignore[arg-type]


class TestQuickStart:
    """Each command the README's quick start uses exists: its ``--help`` exits 0."""

    def test_finds_commands(self) -> None:
        """The scan sees the quick start's commands (guards the scan itself)."""
        assert {("send",), ("trace",), ("logs",), ("demo",)} <= quick_start_commands()

    @pytest.mark.parametrize("command", sorted(quick_start_commands()), ids=" ".join)
    def test_command_exists(self, command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
        """``tracehook COMMAND --help`` exits 0 and prints its usage."""
        with pytest.raises(SystemExit) as exited:
            main([*command, "--help"])
        assert 0 == exited.value.code
        assert "usage: tracehook " + " ".join(command) in capsys.readouterr().out

    def test_make_targets_exist(self) -> None:
        """The ``make`` targets the README names are the Makefile's."""
        readme = README.read_text(encoding="utf-8")
        named = set(re.findall(r"\bmake ([a-z]+)", readme))
        makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
        targets = set(re.findall(r"^([a-z]+):", makefile, re.MULTILINE))
        assert named
        assert set() == named - targets

    def test_compose_services_exist(self) -> None:
        """``docker compose exec|logs SERVICE ...`` in the quick start names the compose file's services."""
        section = _section(README.read_text(encoding="utf-8"), "## Quick start")
        compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
        services = set(re.findall(r"^  ([a-z][a-z-]*):$", compose, re.MULTILINE))
        named: set[str] = set()
        for line in section.splitlines():
            for command in line.split("#", 1)[0].split("|"):
                words = command.replace("\\", " ").split()
                if words[:2] != ["docker", "compose"] or len(words) < 3:
                    continue
                operands = [word for word in words[3:] if not word.startswith("-")]
                if words[2] == "exec":
                    named.update(operands[:1])
                elif words[2] == "logs":
                    named.update(operands)
        assert {"intake"} <= named
        assert set() == named - services


def _code_literals() -> set[str]:
    """Every string literal in the packages' source, as written."""
    found: set[str] = set()
    for path in SOURCES:
        found.update(re.findall(r"\"([^\"\n]+)\"", path.read_text(encoding="utf-8")))
    # The step spans' entity ids: f"rentvine.{key}" over the engine's entity keys.
    found.update(f"rentvine.{key}" for key in _ENTITY_ATTRIBUTES)
    return found


def reference_attributes() -> set[str]:
    """The attribute keys the reference tables list (``key`` or ``key=value``; patterns left out)."""
    found: set[str] = set()
    for page, heading in REFERENCE_TABLES:
        section = _section((DOCS / page).read_text(encoding="utf-8"), heading)
        for row in section.splitlines():
            if not row.startswith("|") or row.startswith("|---"):
                continue
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            for code in _CODE.findall(cells[-1]):
                key = code.split("=", 1)[0]
                if _ATTRIBUTE.fullmatch(key):
                    found.add(key)
    return found


class TestSpanReference:
    """Every span attribute the reference tables name is one the code sets (its literal is in the source)."""

    def test_finds_attributes(self) -> None:
        """The scan sees the tables' attributes (guards the scan itself)."""
        assert {
            "rentvine.event_type",
            "celery.queue_wait_ms",
            "rentvine.work_order_id",
        } <= reference_attributes()

    def test_each_is_set_by_the_code(self) -> None:
        """No attribute in the tables is missing from the source: renaming one in the code fails here."""
        assert [] == sorted(reference_attributes() - _code_literals())


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", _without_fences(text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


class TestLinks:
    """Every page is reachable from the README, and every link between pages leads somewhere."""

    def test_every_page_is_in_the_readme(self) -> None:
        """Each docs/ page is linked from the README."""
        readme = README.read_text(encoding="utf-8")
        linked = {link.split("#", 1)[0] for link in _LINK.findall(readme)}
        assert [] == sorted(
            f"docs/{page.name}" for page in DOCS.glob("*.md") if f"docs/{page.name}" not in linked
        )

    @pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
    def test_links_resolve(self, page: Path) -> None:
        """Relative links name a file that exists and, with ``#anchor``, a heading it has."""
        broken = []
        for link in _LINK.findall(_without_fences(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", link):
                continue  # https:, mailto:
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists() or (
                anchor
                and target.suffix == ".md"
                and anchor not in _anchors(target.read_text(encoding="utf-8"))
            ):
                broken.append(link)
        assert [] == broken

    def test_no_page_cites_notes_outside_the_repository(self) -> None:
        """Code, tests and docs point to docs/, never to notes a clone does not have."""
        outside = re.compile(r"\b(?:DESIGN|STYLE|GUIDE)\.md\b")
        files = [
            *SOURCES,
            *(ROOT / "tests").rglob("*.py"),
            *PAGES,
            ROOT / "pyproject.toml",
            ROOT / "Dockerfile",
        ]
        files += [ROOT / "docker-compose.yml", *(ROOT / "workflows" / "fixtures").rglob("*.md")]
        assert [] == sorted(
            str(path.relative_to(ROOT)) for path in files if outside.search(path.read_text(encoding="utf-8"))
        )
