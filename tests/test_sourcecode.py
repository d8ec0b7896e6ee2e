"""The source stays lint-clean and type-checks: ruff (lint and format), mypy and cython-lint.

The three tools are pinned in the `lint` extra (part of `test`), so the suite does not change
its verdict when one of them makes a release; their settings live in pyproject.toml.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "fastforward"
PYPROJECT = ROOT / "pyproject.toml"

pytestmark = pytest.mark.skipif(
    not (ROOT / "pyproject.toml").exists() or not SRC.is_dir(),
    reason="runs from a source checkout only (not against an installed wheel)",
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m ARGS` (or `python -c CODE ARGS`) from the checkout, this interpreter's tools."""
    # cython-lint calls pycodestyle by name: the interpreter's bin directory goes first on PATH.
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")])}
    cmd = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_ruff_check_is_clean():
    proc = run("ruff", "check", "src", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean():
    proc = run("ruff", "format", "--check", "src", "tests", "bench")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean():
    # [tool.mypy] in pyproject.toml: src/fastforward, untyped definitions checked too.
    proc = run("mypy", "--no-error-summary")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cython_lint_is_clean(tmp_path: Path):
    # [tool.cython-lint] in pyproject.toml sets the line length. cython-lint has no `python -m`
    # entry point; this is what its console script runs. It checks only the style of a .pxi
    # (no unused names): each codec part is also checked under a .pyx name, which it can be
    # since every part imports what it uses.
    sources = sorted(str(p.relative_to(ROOT)) for p in [*SRC.glob("*.pyx"), *SRC.glob("*.pxd")])
    assert [s for s in sources if s.endswith(".pyx")], "no .pyx in src/fastforward"
    parts = sorted(SRC.glob("*.pxi"))
    main = "import sys; from cython_lint.cython_lint import main; sys.exit(main())"
    proc = run("-c", main, *sources, *(str(p.relative_to(ROOT)) for p in parts))
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
    for part in parts:
        (tmp_path / part.with_suffix(".pyx").name).write_text(part.read_text())
    length = re.search(r"^max-line-length = (\d+)$", PYPROJECT.read_text(), re.M)
    assert length, "no max-line-length for cython-lint in pyproject.toml"
    as_pyx = sorted(str(p) for p in tmp_path.glob("*.pyx"))
    proc = run("-c", main, "--max-line-length", length.group(1), *as_pyx)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_references_to_docs_resolve():
    # Docstrings cite a file in docs/ (and a section number): both must exist.
    cited = re.compile(r"docs/([\w-]+\.md)(?: section (\d+(?:\.\d+)?))?")
    found = 0
    cython = [*SRC.glob("*.pyx"), *SRC.glob("*.pxd"), *SRC.glob("*.pxi")]
    for path in [*SRC.rglob("*.py"), *cython, *(ROOT / "tests").rglob("*.py")]:
        for name, section in cited.findall(path.read_text()):
            doc = ROOT / "docs" / name
            assert doc.is_file(), f"{path.name} cites docs/{name}, which does not exist"
            if section:
                heading = re.compile(rf"^#+ {re.escape(section)}\.? ", re.M)
                assert heading.search(doc.read_text()), f"{path.name}: docs/{name} has no {section}"
            found += 1
    assert found >= 5  # the codec, the client and the fake Blueflood all point there
