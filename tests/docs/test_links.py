"""The docs set: README links every page the issue asks for, and every relative link in README.md and docs/ leads
to a file that exists (a renamed page must take its links along)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold commands, not links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_lead_to_files(page: Path) -> None:
    for target in relative_links(page):
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.relative_to(ROOT)} links {target}, which does not exist"


def test_readme_links_the_docs_set() -> None:
    linked = {Path(t.split("#")[0]).name for t in relative_links(ROOT / "README.md")}
    for page in (
        "quickstart",
        "architecture",
        "wire-spec",
        "configuration",
        "deployment",
        "raspberry-pi",
        "operations",
    ):
        assert f"{page}.md" in linked, f"README.md does not link docs/{page}.md"


def test_operations_keeps_a_metrics_section() -> None:
    assert re.search(r"^## Metrics$", (ROOT / "docs" / "operations.md").read_text(), re.M)
