"""The operator-facing files: Docker entrypoint and image, systemd unit, Prometheus alerts.

The entrypoint runs for real under bash with a fake `fastforward` on PATH that reports its argv,
environment and pid, and once with the real one, whose /health the image's HEALTHCHECK command
then reads. There is no container engine here: the Dockerfile is read and checked. The unit goes
through `systemd-analyze verify` when it is installed and a pure-Python reading of its settings
always. The alert rules go through the real `promtool` (required when $CI is set; Debian's
`prometheus` package ships it) and are parsed as YAML, and every metric they name must be one
fastforward exports.
"""

from __future__ import annotations

import fnmatch
import json
import os
import pickle
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import gevent
import pytest

from fastforward import cli, config, stats
from tests.support import ADMIN, LISTENING, wait_until

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "docker-entrypoint.sh"
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "contrib" / "fastforward.service"
ALERTS = ROOT / "contrib" / "prometheus-alerts.yml"
BASH = shutil.which("bash")

# What the fake reports: argv one per line, then the variables fastforward reads itself.
FAKE_FASTFORWARD = """#!/bin/sh
printf '%s\\n' "$$" > "$FAKE_OUT.pid"
for a in "$@"; do printf '%s\\n' "$a"; done > "$FAKE_OUT.argv"
env | grep -E '^(FASTFORWARD_KEY|KEYSTONE_KEY|[A-Z_]*LOG_[A-Z_]*)=' \\
  > "$FAKE_OUT.env" || true
"""

SPOOL_VOLUME = "/var/lib/fastforward/spool"
ORIGINAL_VARS = (
    "TENANT_ID",
    "LIMIT",
    "ENDPOINT",
    "BLUEFLOOD_URL",
    "METRIC_PREFIX",
    "DEFAULT_TTL",
    "METRICS_SEND_INTERVAL",
    "KEYSTONE_USER",
    "KEYSTONE_KEY",
    "AUTH_URL",
    "LOG_DIR",
    "TWISTED_LOG_LEVEL",
    "LOG_ROTATE_LENGTH",
    "MAX_LOG_ROTATED_FILES",
    # the image's own additions
    "SPOOL_DIR",
    "ADMIN_PORT",
    "ADMIN_INTERFACE",
)


class Ran:
    def __init__(self, proc: subprocess.CompletedProcess[str], out: Path, pid: int) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.shell_pid = pid
        self.argv = _lines(out.with_suffix(".argv"))
        self.env = dict(line.split("=", 1) for line in _lines(out.with_suffix(".env")))
        pid_lines = _lines(out.with_suffix(".pid"))
        self.fake_pid = int(pid_lines[0]) if pid_lines else None


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def run_entrypoint(tmp_path: Path):
    if BASH is None:
        pytest.skip("bash is not installed")
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    fake = fakebin / "fastforward"
    fake.write_text(FAKE_FASTFORWARD)
    fake.chmod(0o755)
    out = tmp_path / "out"

    def run(env: dict[str, str] | None = None, *args: str) -> Ran:
        base = {k: v for k, v in os.environ.items() if k not in ORIGINAL_VARS}
        base = {k: v for k, v in base.items() if not k.startswith("FASTFORWARD_")}
        base.update(PATH=f"{fakebin}{os.pathsep}{base.get('PATH', '/usr/bin:/bin')}")
        base["FAKE_OUT"] = str(out)
        base.update(env or {})
        proc = subprocess.Popen(
            [BASH, str(ENTRYPOINT), *args],
            env=base,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stdout, stderr = proc.communicate(timeout=30)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        return Ran(done, out, proc.pid)

    return run


# ---------------------------------------------------------------------------------------------
# docker entrypoint


def test_entrypoint_defaults_match_the_original_image(run_entrypoint) -> None:
    ran = run_entrypoint({"TENANT_ID": "123456"})
    assert ran.returncode == 0, ran.stderr
    assert ran.argv == [
        "-e", "tcp:2004",
        "-b", "localhost:19000",
        "--tenant", "123456",
        "--ttl", "86400",
        "--limit", "1000000",
        "-i", "30.0",
        "--auth_url", "https://identity.api.rackspacecloud.com/v2.0/tokens",
        # what the original lacked: a spool on the image's volume, /metrics and /health
        "--spool-dir", SPOOL_VOLUME,
        "--admin-endpoint", "tcp:port=9108:interface=0.0.0.0",
    ]  # fmt: skip
    assert ran.env == {}


def test_entrypoint_refuses_to_start_without_a_tenant(run_entrypoint) -> None:
    # The original image sent to tenant 123, somebody else's, when TENANT_ID was forgotten.
    for env, args in [({}, ()), ({"TENANT_ID": ""}, ()), ({}, ("--gzip", "-b", "http://bf"))]:
        ran = run_entrypoint(env, *args)
        assert ran.returncode == 2, (env, args, ran.stderr)
        assert "TENANT_ID is not set" in ran.stderr and "BLUEFLOOD_URL=-" in ran.stderr
        assert ran.fake_pid is None  # fastforward never started


@pytest.mark.parametrize(
    ("env", "args"),
    [
        ({"BLUEFLOOD_URL": "-"}, ()),
        ({"FASTFORWARD_BLUEFLOOD": "-"}, ()),
        ({"FASTFORWARD_DRY_RUN": "True"}, ()),
        ({}, ("--dry-run",)),
        ({}, ("--dry_run",)),
        ({}, ("-b", "-")),
        ({}, ("--blueflood=-",)),
    ],
)
def test_entrypoint_dry_run_needs_no_tenant(run_entrypoint, env, args) -> None:
    ran = run_entrypoint(env, *args)
    assert ran.returncode == 0, ran.stderr
    assert "--tenant" not in ran.argv


@pytest.mark.parametrize(
    ("env", "args"),
    [
        ({"FASTFORWARD_TENANT": "999"}, ()),
        ({}, ("--tenant", "999")),
        ({}, ("-t", "999")),
        ({}, ("--tenant=999",)),
        ({}, ("-t999",)),
        ({"FASTFORWARD_CONFIG": "/etc/ff.ini"}, ()),  # fastforward checks the file's tenant
        ({}, ("-c", "/etc/ff.ini")),
        ({}, ("--help",)),  # needs no tenant
        ({}, ("--version",)),
    ],
)
def test_entrypoint_takes_the_tenant_from_anywhere_fastforward_does(run_entrypoint, env, args):
    ran = run_entrypoint(env, *args)
    assert ran.returncode == 0, ran.stderr
    assert ran.argv.count("--tenant") == args.count("--tenant")  # none added by the script


def test_entrypoint_spool_and_admin_endpoint_can_be_moved_or_turned_off(run_entrypoint) -> None:
    ran = run_entrypoint({"TENANT_ID": "1", "SPOOL_DIR": "/data/spool", "ADMIN_PORT": "9200",
                          "ADMIN_INTERFACE": "127.0.0.1"})  # fmt: skip
    assert ran.argv[ran.argv.index("--spool-dir") + 1] == "/data/spool"
    assert ran.argv[ran.argv.index("--admin-endpoint") + 1] == "tcp:port=9200:interface=127.0.0.1"
    ran = run_entrypoint({"TENANT_ID": "1", "SPOOL_DIR": "", "ADMIN_PORT": ""})
    assert ran.argv[ran.argv.index("--spool-dir") + 1] == ""  # empty: the spool is off
    assert "--admin-endpoint" not in ran.argv
    # fastforward's own variables win over the image's defaults (they are not overridden).
    ran = run_entrypoint(
        {"TENANT_ID": "1", "FASTFORWARD_SPOOL_DIR": "/s", "FASTFORWARD_ADMIN_ENDPOINT": "tcp:1"}
    )
    assert "--spool-dir" not in ran.argv and "--admin-endpoint" not in ran.argv


def test_entrypoint_passes_every_original_variable(run_entrypoint, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    ran = run_entrypoint(
        {
            "TENANT_ID": "836986",
            "LIMIT": "500000",
            "ENDPOINT": "tcp:port=2004:interface=0.0.0.0",
            "BLUEFLOOD_URL": "http://blueflood.internal:19000",
            "METRIC_PREFIX": "dc1.graphite",
            "DEFAULT_TTL": "172800",
            "METRICS_SEND_INTERVAL": "10",
            "KEYSTONE_USER": "metrics-bot",
            "KEYSTONE_KEY": "s3cr3t-api-key",
            "AUTH_URL": "https://identity.example/v2.0/tokens",
            "LOG_DIR": str(logs),
            "TWISTED_LOG_LEVEL": "WARN",
            "LOG_ROTATE_LENGTH": "1000",
            "MAX_LOG_ROTATED_FILES": "3",
        }
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.argv == [
        "-e", "tcp:port=2004:interface=0.0.0.0",
        "-b", "http://blueflood.internal:19000",
        "--tenant", "836986",
        "--ttl", "172800",
        "--limit", "500000",
        "-i", "10",
        "--auth_url", "https://identity.example/v2.0/tokens",
        "--spool-dir", SPOOL_VOLUME,
        "--admin-endpoint", "tcp:port=9108:interface=0.0.0.0",
        "-p", "dc1.graphite",
        "-u", "metrics-bot",
    ]  # fmt: skip
    # The API key reaches fastforward through its environment, never through argv.
    assert "s3cr3t-api-key" not in ran.argv
    assert ran.env["FASTFORWARD_KEY"] == "s3cr3t-api-key"
    assert "KEYSTONE_KEY" not in ran.env
    # Log settings are read by fastforward itself; the directory is created if missing.
    assert ran.env["LOG_DIR"] == str(logs)
    assert ran.env["LOG_ROTATE_LENGTH"] == "1000"
    assert ran.env["MAX_LOG_ROTATED_FILES"] == "3"
    assert ran.env["TWISTED_LOG_LEVEL"] == "WARN"
    assert logs.is_dir()


def test_entrypoint_leaves_fastforward_variables_alone(run_entrypoint) -> None:
    # FASTFORWARD_ENDPOINT alone must not be beaten by -e tcp:2004 (the original's default).
    ran = run_entrypoint({"FASTFORWARD_TENANT": "999", "FASTFORWARD_ENDPOINT": "tcp:2005"})
    assert ran.returncode == 0, ran.stderr
    assert "--tenant" not in ran.argv and "-e" not in ran.argv
    assert ran.argv[:2] == ["-b", "localhost:19000"]
    # With both set, the original variable is the one passed (as on the original image).
    ran = run_entrypoint({"FASTFORWARD_TENANT": "999", "TENANT_ID": "555"})
    assert ran.argv[ran.argv.index("--tenant") + 1] == "555"


def test_entrypoint_accepts_several_endpoints(run_entrypoint) -> None:
    ran = run_entrypoint({"ENDPOINT": "tcp:2004, tcp6:2004 unix:/run/ff.sock", "TENANT_ID": "1"})
    assert ran.returncode == 0, ran.stderr
    endpoints = [ran.argv[i + 1] for i, a in enumerate(ran.argv) if a == "-e"]
    assert endpoints == ["tcp:2004", "tcp6:2004", "unix:/run/ff.sock"]


def test_entrypoint_empty_prefix_and_user_are_left_out(run_entrypoint) -> None:
    ran = run_entrypoint(
        {"METRIC_PREFIX": "", "KEYSTONE_USER": "", "KEYSTONE_KEY": "", "TENANT_ID": "1"}
    )
    assert ran.returncode == 0, ran.stderr
    assert "-p" not in ran.argv and "-u" not in ran.argv
    assert "FASTFORWARD_KEY" not in ran.env


def test_entrypoint_appends_docker_run_options(run_entrypoint) -> None:
    ran = run_entrypoint({"TENANT_ID": "1"}, "--gzip", "--tenant", "override")
    assert ran.returncode == 0, ran.stderr
    assert ran.argv[-3:] == ["--gzip", "--tenant", "override"]  # last one wins in argparse


def test_entrypoint_runs_a_command_instead(run_entrypoint) -> None:
    ran = run_entrypoint({}, "fastforward", "--version")
    assert ran.returncode == 0, ran.stderr
    assert ran.argv == ["--version"]


def test_entrypoint_execs_so_signals_reach_fastforward(run_entrypoint) -> None:
    ran = run_entrypoint({"TENANT_ID": "1"})
    assert ran.returncode == 0, ran.stderr
    # exec replaces the shell: fastforward has the pid `docker run` started (PID 1 there).
    assert ran.fake_pid == ran.shell_pid


def test_entrypoint_unwritable_log_dir_falls_back_to_stderr(run_entrypoint, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ran = run_entrypoint({"LOG_DIR": str(blocker / "logs"), "TENANT_ID": "1"})
    assert ran.returncode == 0, ran.stderr
    assert "not writable" in ran.stderr and "stderr" in ran.stderr
    assert "LOG_DIR" not in ran.env


def test_entrypoint_is_executable_and_plain_bash() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/bash\n")
    if BASH:
        subprocess.run([BASH, "-n", str(ENTRYPOINT)], check=True, timeout=30)


def _real_fastforward() -> str | None:
    here = Path(sys.executable).parent
    return shutil.which("fastforward", path=str(here)) or shutil.which("fastforward")


@pytest.mark.integration
@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@pytest.mark.skipif(_real_fastforward() is None, reason="fastforward is not installed")
def test_entrypoint_starts_the_real_fastforward(tmp_path: Path) -> None:
    # The argv the entrypoint builds from the original variables is one fastforward accepts:
    # a dry run forwards a frame with the prefix applied, the image's HEALTHCHECK command finds
    # /health answering, and SIGTERM stops it cleanly.
    ff = _real_fastforward()
    assert ff is not None
    env = {k: v for k, v in os.environ.items() if k not in ORIGINAL_VARS}
    env = {k: v for k, v in env.items() if not k.startswith("FASTFORWARD_")}
    env.update(
        PATH=f"{Path(ff).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        ENDPOINT="tcp:port=0:interface=127.0.0.1",
        BLUEFLOOD_URL="-",
        METRIC_PREFIX="pfx",
        METRICS_SEND_INTERVAL="0.2",
        KEYSTONE_USER="someone",
        KEYSTONE_KEY="not-used-in-a-dry-run",
        TWISTED_LOG_LEVEL="INFO",
        SPOOL_DIR=str(tmp_path / "spool"),
        ADMIN_PORT="0",  # the kernel picks; the test reads the port back from the log
        ADMIN_INTERFACE="127.0.0.1",
    )
    proc = subprocess.Popen(
        [str(BASH), str(ENTRYPOINT)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = _LogReader(proc)
    try:
        port = log.port(LISTENING, 4, "the pickle listener")
        admin_port = log.port(ADMIN, 2, "the admin endpoint")
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        ts = int(time.time())
        frame = pickle.dumps([("entry.check", (ts, 7))], protocol=2)
        with sock:
            sock.sendall(struct.pack("!L", len(frame)) + frame)
        assert proc.stdout is not None
        with gevent.Timeout(20, AssertionError("no body on stdout within 20 s")):
            line = proc.stdout.readline()
            while line and not line.startswith("["):  # bodies are JSON arrays, one a line
                line = proc.stdout.readline()
        assert line, "stdout closed before the body came"
        assert json.loads(line) == [
            {
                "collectionTime": ts * 1000,
                "ttlInSeconds": 86400,
                "metricValue": 7,
                "metricName": "pfx.entry.check",
            }
        ]
        healthy = _run_healthcheck(admin_port)
        assert healthy.returncode == 0, healthy.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        # Nothing answers any more: the same command reports the container unhealthy.
        assert _run_healthcheck(admin_port).returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        log.close()


def _run_healthcheck(admin_port: int) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, with this interpreter as the image's `python`."""
    argv = _healthcheck_argv()
    env = {**os.environ, "ADMIN_PORT": str(admin_port)}
    return subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=30
    )


class _LogReader:
    """Collects a child's stderr (its log) in a thread, so the test can wait on what it says."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        self.lines.extend(self.proc.stderr)

    def text(self) -> str:
        return "".join(self.lines)

    def port(self, pattern: re.Pattern[str], group: int, what: str) -> int:
        """The first port ``pattern`` finds in the log (its ``group``), once it is there."""

        def found() -> re.Match[str] | None:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.text()[-3000:]}"
            return pattern.search(self.text())

        wait_until(found, 30, what)
        match = found()
        assert match is not None
        return int(match.group(group))

    def close(self) -> None:
        self.thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------
# Dockerfile (no Docker engine here: read it)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, one list per FROM (global ARGs before it dropped)."""
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _dockerfile_instructions():
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    return stages


def _healthcheck_argv() -> list[str]:
    (final_checks,) = [rest for word, rest in _stages()[-1] if word == "HEALTHCHECK"]
    _options, cmd, argv = final_checks.partition("CMD ")
    assert cmd, final_checks
    return json.loads(argv)  # exec form: no shell needed in the image


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    pairs = " ".join(rest for word, rest in stage if word == "ENV").split()
    return dict(pair.split("=", 1) for pair in pairs)


def test_dockerfile_builds_the_codec_from_source_in_a_builder_stage() -> None:
    instr = _dockerfile_instructions()
    assert ("ARG", "PYTHON_IMAGE=python:3.12-slim") in instr
    builder, image = _stages()  # exactly two: build, then run
    assert builder[0] == ("FROM", "${PYTHON_IMAGE} AS builder")
    assert image[0] == ("FROM", "${PYTHON_IMAGE}")  # the same Python the wheel was built for
    build_runs = " ".join(rest for word, rest in builder if word == "RUN")
    assert ("COPY", ". .") in builder  # the source tree, not a wheel from the host
    assert "gcc" in build_runs
    assert "FASTFORWARD_REQUIRE_EXTENSION=1 pip wheel" in build_runs and build_runs.endswith(" .")
    image_runs = " ".join(rest for word, rest in image if word == "RUN")
    assert "from=builder" in image_runs and "--no-index" in image_runs
    assert "pip install" in image_runs and " blueflood-fastforward;" in image_runs
    assert "codec: cython" in image_runs  # the image refuses to build around the slow codec
    assert "gcc" not in image_runs and not [r for w, r in image if w == "COPY" and r == ". ."]


def test_dockerfile_runs_like_the_original_image_and_keeps_the_promises() -> None:
    image = _stages()[-1]
    assert ("EXPOSE", "2004 9108") in image
    entry = [json.loads(rest) for word, rest in image if word == "ENTRYPOINT"]
    assert entry == [["/usr/local/bin/docker-entrypoint.sh"]]  # exec form: no /bin/sh -c
    copies = [rest for word, rest in image if word == "COPY"]
    assert any(
        "docker/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh" in c for c in copies
    )
    users = [rest for word, rest in image if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    # The spool: on by default, on a declared volume, the same path everywhere.
    env = _env(image)
    assert env["SPOOL_DIR"] == SPOOL_VOLUME
    volumes = [json.loads(rest) for word, rest in image if word == "VOLUME"]
    assert volumes == [[SPOOL_VOLUME]]
    assert f'"{SPOOL_VOLUME}"' in ENTRYPOINT.read_text()
    runs = " ".join(rest for word, rest in image if word == "RUN")
    assert SPOOL_VOLUME in runs and "-o fastforward" in runs  # created, owned by the user
    # The health check asks /health on the admin port the entrypoint opens, with Python.
    argv = _healthcheck_argv()
    assert argv[:2] == ["python", "-c"]
    assert "/health" in argv[2] and "ADMIN_PORT" in argv[2] and "curl" not in " ".join(argv)
    assert env["ADMIN_PORT"] == "9108"
    compile(argv[2], "HEALTHCHECK", "exec")


def test_dockerignore_sends_the_source_but_not_local_builds() -> None:
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert not [p for p in patterns if p.startswith("!")]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch.fnmatch(pre, pat.removeprefix("**/")) or fnmatch.fnmatch(pre, pat)
                   for pat in patterns for pre in prefixes)  # fmt: skip

    for needed in ("pyproject.toml", "setup.py", "README.md", "LICENSE", ".git/HEAD",
                   "src/fastforward/_codec.pyx", "src/fastforward/_codec.pxd",
                   "src/fastforward/_codec_pickle.pxi", "src/fastforward/_floatrepr.h",
                   "docker/docker-entrypoint.sh"):  # fmt: skip
        assert not ignored(needed), needed
    for left_out in (".venv/bin/python", "build/lib/x.so", "dist/x.whl",
                     "src/fastforward/_codec.c", "src/fastforward/_version.py"):  # fmt: skip
        assert ignored(left_out), left_out


# ---------------------------------------------------------------------------------------------
# systemd unit


def _read_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """systemd's unit syntax: [Section], Key=Value, # and ; comments, repeated keys kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for n, raw in enumerate(text.replace("\\\n", " ").splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, eq, value = line.partition("=")
        assert current is not None and eq, f"line {n}: not Key=Value inside a section: {raw!r}"
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), f"line {n}: bad key {key!r}"
        current.append((key.strip(), value.strip()))
    return sections


def _seconds(value: str) -> float:
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(num) * units[unit]
    return total


def test_unit_installs_the_project_from_pypi_by_its_own_name() -> None:
    # "fastforward" on PyPI is an unrelated project: the install line must not name it.
    installs = re.findall(r"pip install (\S+)", UNIT.read_text())
    assert installs == ["blueflood-fastforward"]


def test_unit_settings_are_sound() -> None:
    unit = _read_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    svc: dict[str, str] = {}
    env: dict[str, str] = {}
    for key, value in unit["Service"]:
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
        else:
            svc[key] = value
    assert svc["ExecStart"].startswith("/") and svc["ExecStart"].endswith("/fastforward")
    assert svc["Restart"] == "on-failure"
    # A configuration error (2) or an unusable port or spool (3) is not restart-looped.
    assert svc["RestartPreventExitStatus"].split() == [str(cli.EXIT_USAGE), str(cli.EXIT_STARTUP)]
    assert svc["KillSignal"] == "SIGTERM"
    assert svc.get("DynamicUser") == "yes" or svc.get("User") not in (None, "", "root")
    assert int(svc["LimitNOFILE"]) >= 2 * config.Config().max_connections
    # The drain must finish before systemd's SIGKILL.
    drain = float(env.get("FASTFORWARD_DRAIN_TIMEOUT", config.Config().drain_timeout))
    assert _seconds(svc["TimeoutStopSec"]) > drain + 5
    # The spool lives in the unit's StateDirectory, which systemd creates and keeps.
    assert env["FASTFORWARD_SPOOL_DIR"] == "%S/" + svc["StateDirectory"]
    # Every variable it sets is one fastforward reads.
    known = {opt.env_var for opt in config.OPTIONS if opt.env}
    assert set(env) <= known, set(env) - known
    assert dict(unit["Install"])["WantedBy"] == "multi-user.target"


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _unit_with_fake_binary(tmp_path: Path) -> Path:
    # verify checks that ExecStart exists; point it at a stand-in, change nothing else.
    fake = tmp_path / "fastforward"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    unit = tmp_path / "fastforward.service"
    text = UNIT.read_text()
    unit.write_text(text.replace("ExecStart=/opt/fastforward/bin/fastforward", f"ExecStart={fake}"))
    return unit


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _unit_with_fake_binary(tmp_path)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # Unknown keys and unparsable values are only warnings (exit 0): any output is a failure.
    assert proc.returncode == 0 and proc.stderr.strip() == "" and proc.stdout.strip() == "", (
        proc.stdout + proc.stderr
    )


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_unit_is_hardened(tmp_path: Path) -> None:
    unit = _unit_with_fake_binary(tmp_path)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=25", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("systemd-analyze too old for security --offline")
    # Exit status is non-zero when the exposure score is above 2.5 (of 10).
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert re.search(r"Overall exposure level for \S+: [0-2]\.\d", proc.stdout)


# ---------------------------------------------------------------------------------------------
# Prometheus alerts


def _exported_metric_names() -> set[str]:
    names = set()
    for name, (kind, _help) in stats.METRICS.items():
        names.add(f"fastforward_{name}_total" if kind == "counter" else f"fastforward_{name}")
    return names


def test_alerts_name_only_metrics_fastforward_exports() -> None:
    text = ALERTS.read_text()
    used = set(re.findall(r"\bfastforward_[a-z_]+\b", text))
    for required in (
        "fastforward_datapoints_dropped_total",
        "fastforward_datapoints_rejected_total",
        "fastforward_backpressure_active",
    ):
        assert required in used
    # Metric names in the expressions, not the alert names (which are CamelCase).
    assert used <= _exported_metric_names(), used - _exported_metric_names()


def test_alerts_pass_promtool() -> None:
    # In CI this must run: .ci/run installs promtool (Debian's prometheus package).
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        assert not os.environ.get("CI"), (
            "CI is set but promtool is missing (apt-get install prometheus)"
        )
        pytest.skip("promtool is not installed (set PROMTOOL to its path)")
    proc = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_alerts_yaml_structure() -> None:
    import yaml  # PyYAML is in the test extra: no skip

    doc = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert rules and all({"alert", "expr", "labels", "annotations"} <= set(r) for r in rules)
    assert {r["labels"]["severity"] for r in rules} <= {"warning", "critical"}
