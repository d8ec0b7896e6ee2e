"""What a user gets from `pip install`: the wheel and the sdist, built from a clean clone.

A clone of HEAD, tagged v9.8.7, is built once with `python -m build` (sdist, then the wheel from
the sdist), under the distribution name `blueflood-fastforward` (files `blueflood_fastforward-*`;
the import package and the command stay `fastforward`). The wheel goes into a fresh virtual
environment on a PATH with no C compiler and no Cython, and must run with the compiled codec:
`fastforward --version` and a short dry-run forward of one pickle frame. The sdist, installed where
no compiler works, must fall back to the pure-Python codec with a warning, and still forward. A
`git archive` tarball must build, with its version from the tag (.git_archival.txt). The
cibuildwheel configuration must list exactly the wheels wheels.yml is meant to ship.

The build tool runs from a scratch directory: a `build/` folder left in the checkout by `pip
install .` (the README's first command) must not pass for the `build` package.

These tests need git, network access to PyPI (or a warm pip cache) and a compiler for the first
build; they are `slow` and excluded from the cibuildwheel test run.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import LISTENING, wait_until

ROOT = Path(__file__).resolve().parent.parent
TAG_VERSION = "9.8.7"
PYTHONS = ("310", "311", "312", "313", "314", "315")
FALLBACK_WARNING = "building without the compiled codec"

slow = pytest.mark.slow
needs_git = pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(),
    reason="needs git and a git checkout of the project",
)
# The build scrubs FASTFORWARD_* anyway, so the pure-Python rerun of the suite would only
# repeat the same minute of building.
not_in_pure_run = pytest.mark.skipif(
    bool(os.environ.get("FASTFORWARD_NO_EXTENSIONS")),
    reason="packaging is checked in the run with the compiled codec",
)


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would steer the build or the imports."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FASTFORWARD_", "PYTHON", "SETUPTOOLS_SCM", "CIBW_"))
        and k not in ("VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
    }
    env.update(extra)
    return env


def _run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:  # fmt: skip
    proc = subprocess.run(
        [str(c) for c in cmd],
        env=env if env is not None else _clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


@dataclass
class Built:
    clone: Path
    sdist: Path
    wheel: Path
    build_cmd: list[str]
    tmp: Path


DIST = "blueflood_fastforward"  # the distribution name as it appears in file names


def _has_build_tool(python: str | Path, cwd: Path) -> bool:
    """Whether `python -m build` would run the real `build` package when started in `cwd`.

    Asked in a subprocess started in `cwd`, because that is where the build runs: a `build/`
    directory in the current directory imports as an empty namespace package (no __file__),
    which `find_spec` in this process would happily report.
    """
    probe = "import build, sys; sys.exit(getattr(build, '__file__', None) is None)"
    proc = subprocess.run([str(python), "-c", probe], cwd=cwd, env=_clean_env(),
                          capture_output=True, timeout=60)  # fmt: skip
    return proc.returncode == 0


def _build_command(tmp: Path) -> list[str]:
    """`python -m build`, from this venv when it has it, else from a scratch venv.

    Always run with `cwd=tmp` (outside the checkout), where no stray `build/` can shadow it.
    """
    if _has_build_tool(sys.executable, tmp):
        return [sys.executable, "-m", "build"]
    venv = tmp / "build-tool"
    _run([sys.executable, "-m", "venv", venv])  # with pip: build installs build deps with it
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "build"])
    assert _has_build_tool(py, tmp), "pip installed build, but it does not import"
    return [str(py), "-m", "build"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("packaging")
    clone = tmp / "clone"
    _run(["git", "clone", "--quiet", "--no-hardlinks", ROOT, clone])
    # Only our tag, so `git describe` cannot pick a real release tag on the same commit.
    for tag in _run(["git", "-C", clone, "tag", "--list"]).stdout.split():
        _run(["git", "-C", clone, "tag", "-d", tag])
    _run(["git", "-C", clone, "tag", f"v{TAG_VERSION}"])
    build_cmd = _build_command(tmp)
    dist = tmp / "dist"
    _run([*build_cmd, "--outdir", dist, clone], env=_clean_env(), cwd=tmp)
    built_files = sorted(p.name for p in dist.iterdir())
    assert [name.split("-")[0] for name in built_files] == [DIST, DIST], built_files
    (sdist,) = dist.glob(f"{DIST}-*.tar.gz")
    (wheel,) = dist.glob(f"{DIST}-*.whl")
    return Built(clone=clone, sdist=sdist, wheel=wheel, build_cmd=build_cmd, tmp=tmp)


@dataclass
class Venv:
    path: Path
    env: dict[str, str]  # PATH: the venv and a stand-in `false`; no compiler, no Cython

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def fastforward(self) -> Path:
        return self.path / "bin" / "fastforward"


def _fresh_venv(where: Path) -> Venv:
    _run([sys.executable, "-m", "venv", "--without-pip", where])
    tools = where.parent / f"{where.name}-tools"
    tools.mkdir()
    false = shutil.which("false") or "/bin/false"
    (tools / "false").symlink_to(false)
    path = f"{where / 'bin'}{os.pathsep}{tools}"
    env = _clean_env(PATH=path, CC="false", CXX="false")
    for compiler in ("cc", "gcc", "clang", "cython", "cythonize"):
        assert shutil.which(compiler, path=path) is None, f"{compiler} is on the test PATH"
    return Venv(where, env)


def _pip_install(venv: Venv, *args: str | Path) -> subprocess.CompletedProcess[str]:
    # The project venv's pip installs into the fresh one (pip --python): no pip bootstrap there,
    # and the pip cache is shared, so gevent & co come from the cache after the first run.
    return _run([sys.executable, "-m", "pip", "--python", venv.python, "install", *args],
                env=venv.env)  # fmt: skip


def _version_line(venv: Venv, *cmd: str | Path) -> str:
    return _run(list(cmd), env=venv.env, cwd=venv.path).stdout.strip()


def _forward_one_frame(venv: Venv) -> str:
    """Dry run: one pickle frame in, its Blueflood JSON body on stdout; returns the log."""
    proc = subprocess.Popen(
        [venv.fastforward, "-b", "-", "-e", "tcp:port=0:interface=127.0.0.1", "-i", "0.2"],
        env=venv.env,
        cwd=venv.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []

    def pump_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def pump_log() -> None:
        assert proc.stderr is not None
        log.extend(proc.stderr)

    def log_text() -> str:
        return "".join(log)

    def bound_port() -> int | None:
        """The port the kernel gave the pickle listener, from fastforward's log."""
        assert proc.poll() is None, f"fastforward exited {proc.returncode}: {log_text()}"
        for kind, protocol, _host, port in LISTENING.findall(log_text()):
            if (kind, protocol) == ("tcp", "pickle"):
                return int(port)
        return None

    readers = [threading.Thread(target=pump, daemon=True) for pump in (pump_stdout, pump_log)]
    for reader in readers:
        reader.start()
    try:
        wait_until(bound_port, 30, "fastforward's listening line")
        port = bound_port()
        assert port is not None
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        ts = int(time.time())
        payload = pickle.dumps([("packaging.check.metric", (ts, 42.5))], protocol=2)
        with sock:
            sock.sendall(struct.pack("!L", len(payload)) + payload)
        deadline = time.monotonic() + 20
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no body on stdout within 20 s"
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, f"stdout closed: {log_text()}"
            try:
                body = json.loads(line)
            except ValueError:
                continue
            if isinstance(body, list) and body:
                assert body == [
                    {
                        "collectionTime": ts * 1000,
                        "ttlInSeconds": 86400,
                        "metricValue": 42.5,
                        "metricName": "packaging.check.metric",
                    }
                ]
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_text()
        for reader in readers:
            reader.join(timeout=5)
        return log_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for reader in readers:
            reader.join(timeout=5)


# ---------------------------------------------------------------------------------------------


@slow
@needs_git
@not_in_pure_run
def test_sdist_carries_the_cython_source(built: Built) -> None:
    assert built.sdist.name == f"{DIST}-{TAG_VERSION}.tar.gz"
    with tarfile.open(built.sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    parts = sorted(p.name for p in (ROOT / "src" / "fastforward").glob("_codec*.px[di]"))
    assert "_codec.pxd" in parts and "_codec_pickle.pxi" in parts, parts
    for needed in (
        "src/fastforward/_codec.pyx",
        *(f"src/fastforward/{part}" for part in parts),
        "src/fastforward/_codec_py.py",
        "src/fastforward/_floatrepr.h",
        "setup.py",
        "pyproject.toml",
        "LICENSE",
        "PKG-INFO",
    ):
        assert needed in names, needed


@slow
@needs_git
@not_in_pure_run
def test_wheel_has_the_compiled_codec_and_no_sources(built: Built) -> None:
    assert built.wheel.name.startswith(f"{DIST}-{TAG_VERSION}-cp")
    with zipfile.ZipFile(built.wheel) as zf:
        names = zf.namelist()
    assert any(re.fullmatch(r"fastforward/_codec\.[^/]+\.so", n) for n in names), names
    assert "fastforward/_codec_py.py" in names
    assert not [n for n in names if n.endswith((".pyx", ".pxd", ".pxi", ".c", ".h"))]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)


@slow
@needs_git
@not_in_pure_run
def test_wheel_is_named_for_pypi_and_installs_the_fastforward_command(built: Built) -> None:
    # "fastforward" on PyPI is somebody else's project: the distribution has its own name,
    # while the import package and the command keep ours.
    with zipfile.ZipFile(built.wheel) as zf:
        names = zf.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        headers = zf.read(metadata).decode()
        scripts = zf.read(entry_points).decode()
    assert re.search(r"^Name: blueflood-fastforward$", headers, re.M), headers[:500]
    assert re.search(r"^fastforward = fastforward\.cli:main$", scripts, re.M), scripts
    assert {n.split("/")[0] for n in names if not n.startswith(f"{DIST}-")} == {"fastforward"}


def test_a_build_folder_is_not_taken_for_the_build_tool(tmp_path: Path) -> None:
    # `pip install .` leaves build/ in the checkout; started there, `import build` finds it as
    # an empty namespace package. The probe must see through that, with or without the tool.
    (tmp_path / "build" / "lib.linux-x86_64-cpython-3" / "fastforward").mkdir(parents=True)
    bare = tmp_path / "bare-venv"
    _run([sys.executable, "-m", "venv", "--without-pip", bare])
    assert not _has_build_tool(bare / "bin" / "python", tmp_path)
    try:
        import build  # noqa: F401 - only whether the test extra's build tool is here
    except ImportError:
        return
    assert _has_build_tool(sys.executable, tmp_path)


@slow
@needs_git
@not_in_pure_run
def test_wheel_runs_without_compiler_or_cython(built: Built) -> None:
    venv = _fresh_venv(built.tmp / "venv-wheel")
    _pip_install(venv, built.wheel)
    assert _run([venv.python, "-c", "import importlib.util as u; print(u.find_spec('Cython'))"],
                env=venv.env).stdout.strip() == "None"  # fmt: skip
    expected = f"fastforward {TAG_VERSION} (codec: cython)"
    assert _version_line(venv, venv.fastforward, "--version") == expected
    assert _version_line(venv, venv.python, "-m", "fastforward", "--version") == expected
    assert "the compiled codec is not installed" not in _forward_one_frame(venv)


@slow
@needs_git
@not_in_pure_run
def test_sdist_without_compiler_falls_back_to_python_codec(built: Built) -> None:
    venv = _fresh_venv(built.tmp / "venv-sdist")
    proc = _pip_install(venv, "-v", built.sdist)
    assert FALLBACK_WARNING in proc.stdout + proc.stderr
    assert _version_line(venv, venv.fastforward, "--version") == (
        f"fastforward {TAG_VERSION} (codec: python)"
    )
    log = _forward_one_frame(venv)
    assert "the compiled codec is not installed" in log  # said at every start, not only by pip


@slow
@needs_git
@not_in_pure_run
def test_git_archive_builds_with_the_tag_version(built: Built) -> None:
    archive = built.tmp / "archive.tar.gz"
    _run(["git", "-C", built.clone, "archive", "--format=tar.gz", "--prefix=ff-archive/",
          "-o", archive, "HEAD"])  # fmt: skip
    out = built.tmp / "from-archive"
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(out, filter="data")
        else:  # Python 3.10 before 3.10.12
            tar.extractall(out)  # our own archive
    src = out / "ff-archive"
    assert not (src / ".git").exists()
    assert f"describe-name: v{TAG_VERSION}" in (src / ".git_archival.txt").read_text()
    dist = built.tmp / "dist-archive"
    # Pure-Python wheel: this checks versioning, not the compiler (the tests above do that).
    _run([*built.build_cmd, "--outdir", dist, src],
         env=_clean_env(FASTFORWARD_NO_EXTENSIONS="1"), cwd=built.tmp)  # fmt: skip
    assert sorted(p.name for p in dist.iterdir()) == [
        f"{DIST}-{TAG_VERSION}-py3-none-any.whl",
        f"{DIST}-{TAG_VERSION}.tar.gz",
    ]


# ---------------------------------------------------------------------------------------------
# cibuildwheel configuration (fast; needs cibuildwheel, which is not a test dependency)


def _cibuildwheel() -> str | None:
    return os.environ.get("CIBUILDWHEEL") or shutil.which("cibuildwheel")


@pytest.mark.skipif(_cibuildwheel() is None, reason="cibuildwheel not installed (or $CIBUILDWHEEL)")
@pytest.mark.parametrize(
    ("platform", "archs", "tags"),
    [
        ("linux", "x86_64,aarch64", [f"{lib}_{arch}" for lib in ("manylinux", "musllinux")
                                     for arch in ("x86_64", "aarch64")]),
        ("macos", "x86_64,arm64", ["macosx_x86_64", "macosx_arm64"]),
    ],
)  # fmt: skip
def test_cibuildwheel_builds_exactly_the_supported_wheels(
    platform: str, archs: str, tags: list[str]
) -> None:
    proc = _run(
        [_cibuildwheel(), "--print-build-identifiers", "--platform", platform, "--archs", archs],
        cwd=ROOT,
        env=_clean_env(),
        timeout=120,
    )
    got = set(proc.stdout.split())
    assert got == {f"cp{py}-{tag}" for py in PYTHONS for tag in tags}


def test_wheels_workflow_clones_with_history() -> None:
    # A shallow clone makes setuptools-scm version every wheel 0.1.devN.
    text = (ROOT / ".github" / "workflows" / "wheels.yml").read_text()
    checkouts = text.count("uses: actions/checkout@")
    assert checkouts >= 2 and text.count("fetch-depth: 0") == checkouts


def test_workflows_publish_our_name_and_lint_with_the_pinned_tools() -> None:
    wheels = (ROOT / ".github" / "workflows" / "wheels.yml").read_text()
    assert "https://pypi.org/p/blueflood-fastforward" in wheels
    assert "dist/fastforward-" not in wheels and "pypi.org/p/fastforward" not in wheels
    # The lint job runs the very versions the `lint` extra pins.
    pins = re.findall(r'"((?:ruff|cython-lint)==[^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert len(pins) == 2, pins
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    for pin in pins:
        assert f"--spec {pin} " in ci, pin
    assert not re.search(r"pipx run (ruff|cython-lint)\b", ci)  # nothing unpinned


def _readme_commands(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {section}\n")
    body = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"^    \$ (.+)$", body, re.M)


def test_readme_gives_two_set_up_commands_install_and_run_then_test() -> None:
    # .ci/run runs exactly these two, in this order, in one clone (see its header).
    run, test = _readme_commands("Set up")
    assert "pip install . " in run and "fastforward --dry-run" in run
    assert "interface=127.0.0.1" in run  # the dry run does not listen on every interface
    assert "pip install -e '.[test]'" in test and test.endswith("python -m pytest")
    assert "pip install fastforward" not in (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "--dry-run" in ci and "pytest" in ci and "README.md" in ci
