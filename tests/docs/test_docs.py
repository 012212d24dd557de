"""The documentation holds: the Python API page's example runs as written, every test the guarantees name exists,
every relative link and anchor resolves, the README stays one short page and links every docs page."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README_MAX_LINES = 200


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks (a link or heading inside one is an example, not part of the page)."""
    return re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.M | re.S)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.M | re.S)


def named_tests(text: str) -> list[str]:
    return re.findall(r"(tests/[\w/]+\.py::\w+)", text)


def missing_tests(text: str, root: Path = ROOT) -> list[str]:
    """Each `tests/PATH.py::NAME` in `text` whose file lacks a top-level or method `def NAME(`."""
    missing = []
    for ref in named_tests(text):
        path, name = ref.split("::")
        file = root / path
        if not file.is_file() or not re.search(rf"^\s*(async\s+)?def {name}\(", file.read_text(), re.M):
            missing.append(ref)
    return missing


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (word characters, hyphens and spaces kept),
    spaces as hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose(text), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def broken_links(page: Path) -> list[str]:
    """Each relative link of `page` whose file does not exist, or whose #anchor names no heading of that file."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(target)
    return broken


def test_the_python_api_example_runs_as_written(tmp_path):
    blocks = python_blocks((DOCS / "python-api.md").read_text())
    assert len(blocks) == 1, "docs/python-api.md holds one runnable python block"
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("loaded ") for line in lines), done.stdout
    accuracy = float(next(line for line in lines if line.startswith("zero-shot top-1")).split()[-1])
    assert 0.0 <= accuracy <= 1.0


def test_every_test_the_guarantees_name_exists():
    text = (DOCS / "guarantees.md").read_text()
    assert len(named_tests(text)) >= 10
    assert missing_tests(text) == []


def test_a_guarantee_naming_a_missing_test_is_caught(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_real():\n    pass\n\nclass T:\n    def test_method(self):\n"
                                                  "        pass\n")
    text = ("| a | tests/test_x.py::test_real |\n| b | tests/test_x.py::test_gone |\n"
            "| c | tests/test_y.py::test_real |\n| d | tests/test_x.py::test_method |\n")
    assert missing_tests(text, tmp_path) == ["tests/test_x.py::test_gone", "tests/test_y.py::test_real"]


def test_every_relative_link_and_anchor_resolves():
    assert {page.name: broken_links(page) for page in pages()} == {page.name: [] for page in pages()}


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## The same batches, on any layout (FSDP2)\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n[ok](other.md) [ok](other.md#the-same-batches-on-any-layout-fsdp2) [ok](#page)\n"
                    "[web](https://example.com/x) [gone](missing.md) [bad anchor](other.md#nowhere) [self](#none)\n"
                    "```\n[in code](ignored.md)\n```\n")
    assert broken_links(page) == ["missing.md", "other.md#nowhere", "#none"]


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)", readme))
    assert {p.name for p in DOCS.glob("*.md")} - linked == set()
    assert not named_tests(readme), "the README links docs/guarantees.md instead of naming tests"
