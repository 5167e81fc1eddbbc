"""The README is a short front door, and the documentation site in docs/ builds strictly.

`mkdocs build --strict` fails on a broken link or anchor between pages and on a page left out
of the navigation (mkdocs.yml's `validation`); the README is checked here: its length, its two
commands, and that each of its links points to a docs page (and heading) that exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAIN_JOB = (
    "python3 -m venv .venv && .venv/bin/pip install -e . && "
    ".venv/bin/emodraw-batch run data/sample.parquet --output out/sample"
)
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 && "
    ".venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest -q"
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _nav_pages(nav: list) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _anchors(page: Path) -> set[str]:
    """The heading anchors of a page, as GitHub makes them and as MkDocs makes them: a link from
    the README must work in both places."""
    github, mkdocs = set(), set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", _prose(page.read_text()), flags=re.M):
        plain = heading.replace("`", "")
        github.add(re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-"))
        ascii_ = unicodedata.normalize("NFKD", plain).encode("ascii", "ignore").decode()
        mkdocs.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_).strip().lower()))
    return github & mkdocs


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's banner about MkDocs 2.0
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    assert sorted(pages) == sorted(p.name for p in DOCS.glob("*.md"))
    for page in pages:
        html = site / ("index.html" if page == "index.md" else f"{page.removesuffix('.md')}/index.html")
        assert html.is_file(), page
    assert (site / "search" / "search_index.json").is_file()
    # offline: no plugin that fetches from the network
    assert not {"social", "privacy"} & {p if isinstance(p, str) else next(iter(p)) for p in config["plugins"]}


def test_readme_is_a_short_front_door() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; move long sections to docs/"


def test_readme_keeps_its_two_commands() -> None:
    text = README.read_text()
    assert f"\n{MAIN_JOB}\n" in text
    assert f"\n{TEST_COMMAND}\n" in text
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()  # what CI runs


def test_readme_links_only_to_docs_pages_that_exist() -> None:
    text = _prose(README.read_text())
    links = LINK.findall(text)
    assert links
    docs_linked = set()
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        assert path, f"README links to its own anchor {link!r}: link a docs page instead"
        target = (ROOT / path).resolve()
        assert target.is_file(), f"README links to {link!r}, which does not exist"
        assert target.parent == DOCS and target.suffix == ".md", f"README links to {link!r}, not a docs page"
        if anchor:
            assert anchor in _anchors(target), f"README links to {link!r}: no such heading in {path}"
        docs_linked.add(target.name)
    # the README's index of the docs names every page
    assert docs_linked >= {p.name for p in DOCS.glob("*.md")}
