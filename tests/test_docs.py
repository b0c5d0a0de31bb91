"""The documentation stands on its own: links resolve inside the repository (or sdist), and
nothing points outside it."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benches" / "README.md"]
TEXT_SUFFIXES = {".md", ".py", ".rs", ".toml", ".pyi", ".sh", ".txt", ""}
OUTSIDE = ("../" + "shared", "shared/" + "docs")  # split, so that this file does not match itself


@pytest.mark.parametrize("page", [p for p in DOCS if p.exists()], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not there"


def test_the_definitions_document_has_every_section_the_code_cites():
    text = (ROOT / "docs" / "definitions.md").read_text(encoding="utf-8")
    sections = {int(n) for n in re.findall(r"^## (\d+)\.", text, flags=re.M)}
    cited = set()
    for path in [*(ROOT / "python").rglob("*.py"), *(ROOT / "rust").rglob("*.rs"), *(ROOT / "tests").glob("*.py")]:
        cited |= {int(n) for n in re.findall(r"definitions(?:\.md)? §(\d+)", path.read_text(encoding="utf-8"))}
    assert cited and cited <= sections, cited - sections


def test_nothing_refers_outside_the_repository():
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if any(p.startswith(".") or p in {"target", "dist-ci", "report"} for p in parts):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path.stat().st_size < 1 << 20:
            text = path.read_text(encoding="utf-8", errors="replace")
            assert not any(needle in text for needle in OUTSIDE), path
