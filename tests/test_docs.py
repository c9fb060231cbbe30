"""The README and docs/ cite only files and tests that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"(?:tests|experiments|benchmarks|zkapex_jax|docs|circuits)/[A-Za-z0-9_/.-]+\.(?:py|json|md|png|txt)")
TEST = re.compile(r"(tests/[a-z0-9_]+\.py)::([a-z0-9_]+)")


def test_cited_files_exist():
    missing = sorted({(d.name, p) for d in DOCS for p in PATH.findall(d.read_text()) if not (ROOT / p).exists()})
    assert not missing, missing


def test_cited_tests_exist():
    missing = sorted({(d.name, f"{f}::{n}") for d in DOCS for f, n in TEST.findall(d.read_text())
                      if not re.search(rf"^def {n}\b", (ROOT / f).read_text(), re.M)})
    assert not missing, missing
