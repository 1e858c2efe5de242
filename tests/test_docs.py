"""The docs a newcomer reads stay true to the tree: docs/architecture.md's map has one row per
module (and none for a module that is gone), and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs/architecture.md"
README_MAX_LINES = 80
# the packages the map covers: folder -> the dotted prefix of its modules
PACKAGES = {REPO / "src/lpdvae": "lpdvae", REPO / "components": "components", REPO / "pipelines": "pipelines"}
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|", re.MULTILINE)  # a table row whose first cell is one `name`


def dotted(path: Path, folder: Path, prefix: str) -> str:
    """`src/lpdvae/data/music/midi.py` -> `lpdvae.data.music.midi`; a package's `__init__.py` -> the package."""
    parts = [prefix, *path.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_files() -> dict[str, Path]:
    """Every module file under the mapped packages, by dotted name."""
    return {dotted(p, folder, prefix): p for folder, prefix in PACKAGES.items()
            for p in sorted(folder.rglob("*.py")) if "__pycache__" not in p.parts}


def map_rows() -> set[str]:
    """The names in the first cell of each table row of architecture.md's `## Map` section."""
    text = ARCHITECTURE.read_text()
    section = text.split("\n## Map\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for name in ROW.findall(section):
        path = REPO / name  # a row may name a module by path instead: src/lpdvae/x.py, components/y.py
        owner = next((f for f in PACKAGES if path.is_relative_to(f)), None) if name.endswith(".py") else None
        names.add(dotted(path, owner, PACKAGES[owner]) if owner else name)
    return names


def test_every_module_file_has_a_row_in_the_architecture_map():
    missing = sorted(set(module_files()) - map_rows())
    assert not missing, f"{ARCHITECTURE}: add a row to '## Map' for each of {missing}"


def test_every_row_of_the_architecture_map_names_a_module_that_exists():
    stale = sorted(map_rows() - set(module_files()))
    assert not stale, f"{ARCHITECTURE}: '## Map' has rows for modules that do not exist: {stale}"


def test_readme_is_at_most_80_lines():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md: {len(lines)} lines, more than {README_MAX_LINES}"
