#!/usr/bin/env python3
"""End-to-end forwarder benchmark: load generator -> FORWARDER -> counting sink, on 127.0.0.1.

    python3 bench/e2e.py [options] -- FORWARDER COMMAND ...
    python3 bench/e2e.py [options] --compare NAME=CMD --compare NAME=@PRESET ...

A forwarder command is a template; these placeholders are replaced before it starts:
``{PORT}`` (where it must listen for the load), ``{PROTOCOL}`` (``pickle`` or ``line``),
``{SINK_URL}`` (``http://127.0.0.1:{SINK_PORT}``), ``{SINK_PORT}``, ``{INTERVAL}``, ``{TENANT}``,
``{ADMIN_PORT}`` (a spare free port), ``{RUN_DIR}`` (per-run scratch directory), ``{PYTHON}``,
``{FASTFORWARD}``, ``{PEERS}`` and ``{CARBON_VENV}`` (see ``--peers``) and any ``--var
NAME=VALUE``.  ``@fastforward``, ``@carbon-relay`` and ``@carbon-c-relay`` are presets (command,
config files, sink shape; see ``--list-presets``). The peers' venvs are found in ``--peers DIR``,
else ``$FASTFORWARD_BENCH_PEERS``, else ``~/.cache/fastforward-bench`` (``bench/peers.md``).

Per run: start the sink (``sink.py``), the forwarder (own session), wait until it listens, start
``loadgen.py`` (frames pre-built before its clock starts), poll the sink until every datapoint
arrived (distinct ``(name, time)`` pairs) or ``--timeout``, read the forwarder's CPU (user+sys of
the whole process tree, reaped children included) and peak RSS (VmHWM summed over the tree) from
/proc, watch ``--settle`` seconds more for late duplicates, stop everything by PID.

With several forwarders the runs are interleaved (A B A B ...), because the machine is noisy, and
one table of medians (min-max) is printed.  ``--sustained SECONDS --rate R`` (or ``--rate 80%`` of
a burst measured first) sends at a fixed rate and reports RSS every second and the latency from
send to arrival.  Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from rulesgen import rules_text  # bench/: the routing benchmark's rules

HERE = os.path.dirname(os.path.abspath(__file__))
CLK = os.sysconf("SC_CLK_TCK")
REPO_FASTFORWARD = os.path.join(os.path.dirname(HERE), ".venv", "bin", "fastforward")


# ---------------------------------------------------------------------- forwarders
@dataclasses.dataclass
class Forwarder:
    """A command under test and what it needs around it."""

    name: str
    command: str
    sink: dict[str, str]  # input protocol -> sink mode ("http", "pickle", "line")
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # RUN_DIR name -> template
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    note: str = ""


CARBON_CONF = """\
[cache]
STORAGE_DIR = {RUN_DIR}/storage
LOCAL_DATA_DIR = {RUN_DIR}/storage/whisper
LOG_DIR = {RUN_DIR}
PID_DIR = {RUN_DIR}

[relay]
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {LINE_PORT}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {PICKLE_PORT}
ENABLE_UDP_LISTENER = False
RELAY_METHOD = consistent-hashing
REPLICATION_FACTOR = 1
DESTINATIONS = 127.0.0.1:{SINK_PORT}:a
DESTINATION_PROTOCOL = pickle
MAX_DATAPOINTS_PER_MESSAGE = 500
MAX_QUEUE_SIZE = 5000000
USE_FLOW_CONTROL = True
CARBON_METRIC_INTERVAL = 0
LOG_LISTENER_CONNECTIONS = False
STORAGE_DIR = {RUN_DIR}/storage
LOG_DIR = {RUN_DIR}
PID_DIR = {RUN_DIR}
"""

STORAGE_SCHEMAS = """\
[default]
pattern = .*
retentions = 60s:1d
"""

CCR_CONF = """\
listen type linemode 127.0.0.1:{PORT} proto tcp;
cluster sink forward 127.0.0.1:{SINK_PORT} proto tcp;
statistics submit every 60 seconds send to blackhole stop;
match * send to sink stop;
"""

PRESETS: dict[str, Forwarder] = {
    "fastforward": Forwarder(
        "fastforward",
        "{FASTFORWARD} -e tcp:port={PORT}:interface=127.0.0.1 --protocol {PROTOCOL} "
        "-b {SINK_URL} -t {TENANT} -i {INTERVAL}",
        {"pickle": "http", "line": "http"},
        note="carbon in, Blueflood HTTP JSON out",
    ),
    "fastforward-rules": Forwarder(
        "fastforward-rules",
        "{FASTFORWARD} -e tcp:port={PORT}:interface=127.0.0.1 --protocol {PROTOCOL} "
        "-b {SINK_URL} -t {TENANT} -i {INTERVAL} --rules {RUN_DIR}/rules.toml",
        {"pickle": "http", "line": "http"},
        {"rules.toml": rules_text(drops=False)},
        note="fastforward routing by rulesgen.py's rules (100 prefix, 10 regex with rewrites, "
        "31 tenants, tags normalised); run with --names routed",
    ),
    "fastforward-rules-1t": Forwarder(
        "fastforward-rules-1t",
        "{FASTFORWARD} -e tcp:port={PORT}:interface=127.0.0.1 --protocol {PROTOCOL} "
        "-b {SINK_URL} -t {TENANT} -i {INTERVAL} --rules {RUN_DIR}/rules.toml",
        {"pickle": "http", "line": "http"},
        {"rules.toml": rules_text(drops=False, tenants=False)},
        note="the same rules without their tenants: everything to -t (the routing's cost "
        "without the delivery to many tenants)",
    ),
    "fastforward-router": Forwarder(
        "fastforward-router",
        "{FASTFORWARD} -e tcp:port={PORT}:interface=127.0.0.1 --protocol {PROTOCOL} "
        "-b {SINK_URL} -t {TENANT} -i {INTERVAL} --rules {RUN_DIR}/rules.toml",
        {"pickle": "http", "line": "http"},
        {"rules.toml": "# no rules: the router in the path, every name to -t unchanged\n"},
        note="an empty rules file: the cost of having a router at all",
    ),
    "io-floor": Forwarder(
        "io-floor",
        "{VENV_PYTHON} {BENCH}/iofloor.py --port {PORT} --protocol {PROTOCOL} --sink {SINK_PORT} "
        "--tenant {TENANT}",
        {"pickle": "http", "line": "http"},
        note="the I/O floor (iofloor.py): fastforward's socket reads and POSTs, no codec; "
        "run with --no-track-unique",
    ),
    "carbon-relay": Forwarder(
        "carbon-relay",
        "{CARBON_VENV}/bin/carbon-relay.py --config={RUN_DIR}/carbon.conf --nodaemon "
        "--pidfile={RUN_DIR}/carbon-relay.pid --logdir={RUN_DIR} start",
        {"pickle": "pickle", "line": "pickle"},
        {"carbon.conf": CARBON_CONF, "storage-schemas.conf": STORAGE_SCHEMAS},
        {"GRAPHITE_ROOT": "{RUN_DIR}", "GRAPHITE_CONF_DIR": "{RUN_DIR}"},
        note="graphite carbon-relay (PyPI carbon): carbon in, pickle TCP out (no HTTP/JSON)",
    ),
    "carbon-c-relay": Forwarder(
        "carbon-c-relay",
        "carbon-c-relay -f {RUN_DIR}/relay.conf -l {RUN_DIR}/relay.log -q 5000000 -w {CCR_WORKERS}",
        {"line": "line"},
        {"relay.conf": CCR_CONF},
        note="carbon-c-relay (Debian, C): plaintext in, plaintext TCP out; no pickle input",
    ),
}

# The peers installed by hand (graphite's carbon-relay, py-spy) live in scratch venvs outside
# the project: in --peers DIR, else $FASTFORWARD_BENCH_PEERS, else the user's cache (peers.md).
PEERS_ENV = "FASTFORWARD_BENCH_PEERS"
DEFAULT_PEERS = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "fastforward-bench",
)


def peers_dir(option: str = "") -> str:
    """Where the peers' venvs are: the option, the environment variable, or the default."""
    return os.path.expanduser(option or os.environ.get(PEERS_ENV) or DEFAULT_PEERS)


DEFAULT_VARS = {
    "CCR_WORKERS": "1",
    "FASTFORWARD": REPO_FASTFORWARD
    if os.path.exists(REPO_FASTFORWARD)
    else (shutil.which("fastforward") or "fastforward"),
    "PYTHON": sys.executable,
    # The Python that has gevent: the project's venv when there is one (iofloor.py needs it).
    "VENV_PYTHON": os.path.join(os.path.dirname(REPO_FASTFORWARD), "python")
    if os.path.exists(REPO_FASTFORWARD)
    else sys.executable,
    "BENCH": HERE,
}


def parse_forwarder(spec: str, default_name: str = "") -> Forwarder:
    """``NAME=CMD`` or ``NAME=@preset`` (or a bare ``@preset``)."""
    name, sep, cmd = spec.partition("=")
    if not sep:
        name, cmd = default_name or spec.lstrip("@"), spec
    cmd = cmd.strip()
    if cmd.startswith("@"):
        preset = PRESETS.get(cmd[1:])
        if preset is None:
            raise SystemExit(f"unknown preset {cmd!r}; known: {', '.join(PRESETS)}")
        return dataclasses.replace(preset, name=name)
    return Forwarder(name, cmd, {"pickle": "http", "line": "http"})


# ---------------------------------------------------------------------- /proc
def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def proc_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st:
                kids.setdefault(int(st[1]), []).append(int(d))
    out, todo = [], [root]
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds (user+sys, reaped children included) of the tree under ``root``."""
    user, system = tree_cpu_split(root)
    return user + system


def tree_cpu_split(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds, reaped children included, of the tree under ``root``."""
    user = system = 0
    for p in proc_tree(root):
        st = _stat(p)
        if st:
            user += int(st[11]) + int(st[13])  # utime cutime
            system += int(st[12]) + int(st[14])  # stime cstime
    return user / CLK, system / CLK


def tree_mem(root: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) in MB summed over the tree under ``root``."""
    hwm = rss = 0
    for p in proc_tree(root):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
                    elif line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return hwm / 1024.0, rss / 1024.0


# ---------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline: float, proc: subprocess.Popen[Any] | None = None) -> bool:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(
    proc: subprocess.Popen[Any] | None, grace: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """Stop a process we started and its descendants, each by PID."""
    if proc is None or proc.poll() is not None:
        return
    pids = proc_tree(proc.pid)
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(grace)
        return
    except subprocess.TimeoutExpired:
        pass
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(5)


def sink_stats(port: int, unique: bool = False) -> dict[str, Any] | None:
    """The sink's counters; ``unique`` makes it fold its kept batches into distinct pairs."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30.0)
    try:
        c.request("GET", "/stats?unique" if unique else "/stats")
        return json.loads(c.getresponse().read())
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        c.close()


def subst(s: str, m: dict[str, Any]) -> str:
    for k, v in m.items():
        s = s.replace("{" + k + "}", str(v))
    return s


# ---------------------------------------------------------------------- one run
def one_run(
    a: argparse.Namespace, fwd: Forwarder, proto: str, run: int, rate: float = 0.0
) -> dict[str, Any]:
    """Measure one forwarder once; returns a flat result dict (``error`` on failure)."""
    sustained = rate > 0
    sink_mode = fwd.sink[proto]
    port, sink_port = free_port(), free_port()
    stats_port = sink_port if sink_mode == "http" else free_port()
    run_dir = os.path.join(
        a.log_dir, f"{proto}-{fwd.name}-{run}{'-sustained' if sustained else ''}"
    )
    os.makedirs(run_dir, exist_ok=True)
    m: dict[str, Any] = dict(DEFAULT_VARS)
    peers = peers_dir(a.peers)
    m.update(
        PEERS=peers,
        CARBON_VENV=os.path.join(peers, "carbon-venv"),
        PORT=port,
        PROTOCOL=proto,
        SINK_PORT=sink_port,
        SINK_URL=f"http://127.0.0.1:{sink_port}",
        INTERVAL=a.interval,
        TENANT=a.tenant,
        ADMIN_PORT=free_port(),
        RUN_DIR=run_dir,
        PICKLE_PORT=port if proto == "pickle" else 0,
        LINE_PORT=port if proto == "line" else 0,
    )
    m.update(v.split("=", 1) for v in a.var)
    for fname, text in fwd.files.items():
        with open(os.path.join(run_dir, fname), "w") as f:
            f.write(subst(text, m))
    res: dict[str, Any] = {
        "forwarder": fwd.name,
        "input": proto,
        "output": sink_mode,
        "run": run,
        "n": a.n,
        "connections": a.connections,
        "run_dir": run_dir,
    }
    expected = int(rate * a.seconds) // a.per_frame * a.per_frame if sustained else a.n
    res["n"] = expected
    sink = proc = lg = attach = None
    logs = []
    try:
        sink_cmd = [
            sys.executable,
            os.path.join(HERE, "sink.py"),
            "--port",
            str(sink_port),
            "--max-seconds",
            str(a.timeout + a.seconds + 120),
            "--expect",
            str(expected),
            "--stats-file",
            os.path.join(run_dir, "sink.json"),
        ]
        if sink_mode != "http":
            sink_cmd += ["--carbon", sink_mode, "--stats-port", str(stats_port)]
        sink_cmd += ["--latency"] if sustained else (["--track-unique"] if a.track_unique else [])
        logs.append(open(os.path.join(run_dir, "sink.log"), "w"))
        sink = subprocess.Popen(sink_cmd, stdout=logs[-1], stderr=subprocess.STDOUT)
        if not wait_port(stats_port, time.monotonic() + 10, sink):
            raise RuntimeError("sink did not start")

        cmd = shlex.split(subst(fwd.command, m))
        res["command"] = shlex.join(cmd)
        env = dict(os.environ)
        env.update({k: subst(v, m) for k, v in fwd.env.items()})
        logs.append(open(os.path.join(run_dir, "forwarder.log"), "w"))
        t_start = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            stdout=logs[-1],
            stderr=subprocess.STDOUT,
            cwd=run_dir,
            env=env,
            start_new_session=True,
        )
        if not wait_port(port, time.monotonic() + a.ready_timeout, proc):
            raise RuntimeError(
                f"forwarder did not listen on {port} (exit {proc.poll()}), "
                f"see {run_dir}/forwarder.log"
            )
        res["startup_s"] = round(time.monotonic() - t_start, 3)
        if a.attach:
            acmd = shlex.split(subst(a.attach, {**m, "PID": proc.pid}))
            logs.append(open(os.path.join(run_dir, "attach.log"), "w"))
            attach = subprocess.Popen(acmd, stdout=logs[-1], stderr=subprocess.STDOUT)
        time.sleep(a.warmup)  # let it finish starting (imports, JIT-free warm caches)
        cpu0 = tree_cpu(proc.pid)
        user0, sys0 = tree_cpu_split(proc.pid)
        sink_cpu0 = tree_cpu(sink.pid)  # the sink shares the cores: show what it costs

        lg_cmd = [
            sys.executable,
            os.path.join(HERE, "loadgen.py"),
            "--port",
            str(port),
            "--mode",
            proto,
            "-n",
            str(a.n),
            "-c",
            str(a.connections),
            "--series",
            str(a.series),
            "--names",
            a.names,
            "--per-frame",
            str(a.per_frame),
            "--timeout",
            str(a.timeout),
        ]
        if sustained:
            lg_cmd += ["--rate", str(rate), "--seconds", str(a.seconds)]
        lg = subprocess.Popen(lg_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + a.timeout + a.seconds * sustained + 30  # + pre-building
        done = st = None
        last, last_change, next_sample = -1, time.monotonic(), 0.0
        rss_series: list[tuple[float, float]] = []
        while time.monotonic() < deadline:
            now = time.monotonic()
            if sustained and now >= next_sample:
                rss_series.append((round(now - t_start, 1), round(tree_mem(proc.pid)[1], 1)))
                next_sample = now + 1.0
            st = sink_stats(stats_port) or st
            if st is not None and st["datapoints"] >= 0.99 * expected and "t99_s" not in res:
                # the sink's arrival time of the newest batch, not this (later) poll's time
                res["t99_s"] = st["last_ts"]
            if st is not None and st["datapoints"] >= expected and a.track_unique:
                st = sink_stats(stats_port, unique=True) or st
            if st is not None:
                got = st.get("unique", st["datapoints"])
                if got >= expected:
                    done = st
                    break
                if got != last:
                    last, last_change = got, now
                elif lg.poll() is not None and now - last_change > a.idle_stop:
                    res["idle_stopped"] = True  # load over, nothing arrives any more
                    break
            if proc.poll() is not None:
                res["exited"] = proc.returncode
                break
            time.sleep(a.poll)
        if proc.poll() is None:
            res["cpu_s"] = round(tree_cpu(proc.pid) - cpu0, 3)
            user1, sys1 = tree_cpu_split(proc.pid)
            res["user_s"], res["sys_s"] = round(user1 - user0, 3), round(sys1 - sys0, 3)
            res["rss_peak_mb"] = round(tree_mem(proc.pid)[0], 1)
        res["sink_cpu_s"] = round(tree_cpu(sink.pid) - sink_cpu0, 3)
        out, err = lg.communicate(timeout=a.timeout + a.seconds + 30)
        lgr = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
        if lgr is None:
            raise RuntimeError(f"loadgen gave no result: {err[-2000:]}")
        if lgr["errors"]:
            res["loadgen_errors"] = lgr["errors"]
        res["ingest_rate"] = lgr["rate"]
        if done is not None and done["last_ts"]:
            el = (done.get("complete_ts") or done["last_ts"]) - lgr["start_ts"]
            res["e2e_s"] = round(el, 4)
            res["e2e_rate"] = round(expected / el, 1) if el > 0 else None
            res["first_arrival_s"] = round(done["first_ts"] - lgr["start_ts"], 3)
        if "t99_s" in res:
            res["t99_s"] = round(res["t99_s"] - lgr["start_ts"], 3)
            if res.get("cpu_s"):
                res["dps_per_cpu_s"] = round(expected / res["cpu_s"], 1)
        if a.settle > 0 and not sustained:
            end = time.monotonic() + a.settle
            while time.monotonic() < end:
                time.sleep(min(a.poll * 4, max(0.0, end - time.monotonic())))
        st = sink_stats(stats_port, unique=a.track_unique and not sustained) or st
        if st is not None:
            got = st.get("unique", st["datapoints"])
            res["received"] = st["datapoints"]
            res["lost"] = max(0, expected - got)
            res["dup"] = st.get("duplicates", max(0, st["datapoints"] - expected))
            res["invalid"] = st.get("invalid", 0)
            res["requests"] = st.get("requests")
            res["ingest_connections"] = st.get("ingest_connections")
        if sustained:
            res["rate_target"] = rate
            res["late_s"] = lgr.get("late_s")
            res["rss_mb_series"] = rss_series
            stop(sink, 5)
            res.update(latency_summary(os.path.join(run_dir, "sink.json"), lgr, rate, a.series))
    except Exception as e:
        res["error"] = repr(e)
    finally:
        stop(attach, 20, signal.SIGINT)  # py-spy writes its profile on SIGINT
        stop(lg, 2)
        stop(proc)
        stop(sink, 5)
        for f in logs:
            f.close()
    return res


def latency_summary(path: str, lgr: dict[str, Any], rate: float, series: int) -> dict[str, Any]:
    """Send-to-arrival latency from the sink's per-batch records.

    The oldest datapoint of a batch has timestamp ``base_ts + k``; the loadgen reports when it
    sent the first datapoint of that timestamp, so the figure is the latency of the batch's
    oldest datapoint, over-estimated by at most the time one timestamp takes to send
    (``series / rate`` seconds).
    """
    try:
        with open(path) as f:
            records = json.load(f).get("latency", [])
    except (OSError, ValueError):
        return {"latency_error": "no sink records"}
    lat: list[tuple[float, int]] = []
    steps = lgr.get("step_sent") or []
    for arrival, oldest, count in records:
        k = int(oldest - lgr["base_ts"])
        # when that timestamp really left the sender; the schedule if it was not recorded
        sent = lgr["start_ts"] + (steps[k] if 0 <= k < len(steps) else k * series / rate)
        lat.append((arrival - sent, count))
    if not lat:
        return {"latency_error": "no batches"}
    lat.sort()
    total = sum(c for _, c in lat)

    def pct(q: float) -> float:
        acc = 0
        for v, c in lat:
            acc += c
            if acc >= q * total:
                return round(v, 3)
        return round(lat[-1][0], 3)

    return {
        "latency_p50_s": pct(0.5),
        "latency_p99_s": pct(0.99),
        "latency_max_s": round(lat[-1][0], 3),
        "latency_resolution_s": round(series / rate, 3),
    }


# ---------------------------------------------------------------------- reporting
def med(vals: list[float]) -> tuple[float, float, float] | None:
    vals = [v for v in vals if isinstance(v, (int, float))]
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def fmt(t: tuple[float, float, float] | None, scale: float = 1.0, digits: int = 0) -> str:
    if t is None:
        return "-"
    m, lo, hi = (x / scale for x in t)
    return f"{m:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def table(results: list[dict[str, Any]], order: list[str]) -> str:
    """A markdown table: medians (min-max) per input and forwarder, plus ratios."""
    lines = [
        "| input | forwarder | out | e2e datapoints/s | CPU s | datapoints per CPU-s "
        "| peak RSS MB | lost | dup | 99% in (s) | datapoints/s to 99% | ok runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for proto in ("pickle", "line"):
        base = None
        for name in order:
            rs = [r for r in results if r["forwarder"] == name and r["input"] == proto]
            if not rs:
                continue
            ok = [r for r in rs if r.get("e2e_rate") and "error" not in r]
            e2e = med([r.get("e2e_rate") for r in ok])
            eff = med([r.get("dps_per_cpu_s") for r in ok])
            lost = med([r.get("lost") for r in rs])
            dup = med([r.get("dup") for r in rs])
            lines.append(
                f"| {proto} | {name} | {rs[0]['output']} | {fmt(e2e)} "
                f"| {fmt(med([r.get('cpu_s') for r in ok]), digits=2)} | {fmt(eff)} "
                f"| {fmt(med([r.get('rss_peak_mb') for r in ok]), digits=1)} "
                f"| {fmt(lost)} | {fmt(dup)} | {fmt(med([r.get('t99_s') for r in ok]), digits=2)} "
                f"| {fmt(med([0.99 * r['n'] / r['t99_s'] for r in ok if r.get('t99_s')]))} "
                f"| {len(ok)}/{len(rs)} |"
            )
            if base is None and e2e and eff:
                base = (name, e2e[0], eff[0])
            elif base and e2e and eff:
                ratios.append(
                    f"{proto}: {base[0]} / {name} = x{base[1] / e2e[0]:.2f} e2e, "
                    f"x{base[2] / eff[0]:.2f} per CPU-second"
                )
    return "\n".join(lines + [""] + ratios)


def sustained_report(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['forwarder']} sustained: error {r['error']}"
    rss = [v for _, v in r.get("rss_mb_series", [])]
    return "\n".join(
        [
            f"{r['forwarder']} sustained {r['input']}: target {r['rate_target']:,.0f}/s, "
            f"{r.get('received', 0):,} of {r['n']:,} received (lost {r.get('lost')}), "
            f"sender late by at most {r.get('late_s')} s",
            f"  latency send->arrival: p50 {r.get('latency_p50_s')} s, "
            f"p99 {r.get('latency_p99_s')} s, max {r.get('latency_max_s')} s "
            f"(resolution {r.get('latency_resolution_s')} s)",
            f"  RSS MB: start {rss[0] if rss else '-'}, min {min(rss, default='-')}, "
            f"max {max(rss, default='-')}, end {rss[-1] if rss else '-'}; peak (VmHWM) "
            f"{r.get('rss_peak_mb')}; CPU {r.get('cpu_s')} s",
            "  RSS every second: " + " ".join(f"{v:.0f}" for v in rss),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the scenarios, print the results."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=CMD",
        help="a forwarder to measure; repeat for side-by-side runs",
    )
    p.add_argument("--input", default="pickle", help="pickle, line or pickle,line")
    p.add_argument("-n", "--n", type=int, default=1_000_000, help="datapoints per burst run")
    p.add_argument("-c", "--connections", type=int, default=4)
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument(
        "--names",
        choices=["plain", "routed"],
        default="plain",
        help="load's names: plain, or routed (rulesgen.py: rule hits, tags out of order)",
    )
    p.add_argument("--per-frame", type=int, default=500)
    p.add_argument("--runs", type=int, default=1, help="runs per forwarder (medians)")
    p.add_argument("--interval", default="1", help="{INTERVAL}: flush interval, seconds")
    p.add_argument("--tenant", default="bench")
    p.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra placeholder; defaults: " + ", ".join([*DEFAULT_VARS, "PEERS", "CARBON_VENV"]),
    )
    p.add_argument(
        "--peers",
        default="",
        metavar="DIR",
        help=f"{{PEERS}}: directory of the peers' venvs ({{CARBON_VENV}} is DIR/carbon-venv); "
        f"default ${PEERS_ENV}, else {DEFAULT_PEERS.replace(os.path.expanduser('~'), '~')}",
    )
    p.add_argument(
        "--no-track-unique",
        dest="track_unique",
        action="store_false",
        help="count only (cheaper sink); lost/dup from totals",
    )
    p.add_argument(
        "--sustained",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="paced mode: send --rate for this long",
    )
    p.add_argument("--rate", default="80%", help="paced rate: datapoints/s or P%% of a burst")
    p.add_argument(
        "--attach",
        default="",
        help="command started against {PID} after listen (e.g. py-spy record); stopped with SIGINT",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="max seconds per run")
    p.add_argument("--ready-timeout", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=0.3)
    p.add_argument("--settle", type=float, default=1.0, help="watch for duplicates this long")
    p.add_argument("--idle-stop", type=float, default=10.0)
    p.add_argument("--poll", type=float, default=0.02)
    p.add_argument("--log-dir", default="")
    p.add_argument("--json-out", default="", help="append every result as a JSON line")
    p.add_argument("--list-presets", action="store_true")
    p.add_argument("--table", default="", metavar="FILE", help="print the table of a --json-out")
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.list_presets:
        for k, f in PRESETS.items():
            print(f"@{k}: {f.command}\n    {f.note}; inputs {', '.join(f.sink)}")
        return 0
    if a.table:
        with open(a.table) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        rows = [r for r in rows if "rate_target" not in r]
        print(table(rows, list(dict.fromkeys(r["forwarder"] for r in rows))))
        return 0
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    fwds = [parse_forwarder(s) for s in a.compare]
    if cmd:
        fwds.insert(0, parse_forwarder(shlex.join(cmd), default_name="forwarder"))
    if not fwds:
        p.error("give a forwarder command after -- or --compare NAME=CMD")
    if not 1 <= a.runs <= 50 or a.n <= 0 or a.sustained < 0:
        p.error("--runs 1..50, -n > 0")
    a.seconds = a.sustained
    a.log_dir = a.log_dir or tempfile.mkdtemp(prefix="ff-bench-")
    inputs = [x.strip() for x in a.input.split(",") if x.strip()]
    order = [f.name for f in fwds]
    results: list[dict[str, Any]] = []

    def record(r: dict[str, Any]) -> None:
        results.append(r)
        short = {k: v for k, v in r.items() if k != "rss_mb_series"}
        print(json.dumps(short), file=sys.stderr, flush=True)
        if a.json_out:
            with open(a.json_out, "a") as f:
                f.write(json.dumps(r) + "\n")

    for proto in inputs:
        todo = [f for f in fwds if proto in f.sink]
        for f in fwds:
            if proto not in f.sink:
                print(f"# {f.name}: skipped for {proto} input ({f.note})", file=sys.stderr)
        if a.sustained:
            for f in todo:
                rate = a.rate
                if rate.endswith("%"):
                    burst = one_run(a, f, proto, 0)
                    record(burst)
                    if not burst.get("e2e_rate"):
                        continue
                    # The burst's throughput, without its wait for the last interval flush.
                    top = burst["e2e_rate"]
                    if burst.get("t99_s"):
                        top = max(top, 0.99 * burst["n"] / burst["t99_s"])
                    rate = str(round(top * float(rate[:-1]) / 100.0, -3))
                r = one_run(a, f, proto, 0, rate=float(rate))
                record(r)
                print(sustained_report(r), flush=True)
            continue
        for run in range(a.runs):  # interleaved: A B A B ...
            for f in todo:
                record(one_run(a, f, proto, run))

    if not a.sustained:
        print(
            f"\n{a.n:,} datapoints per run, {a.connections} connections, frames of "
            f"{a.per_frame}, {a.series:,} {a.names} series, interval {a.interval} s; "
            f"median (min-max) of {a.runs} interleaved runs"
        )
        print(table(results, order))
        for f in fwds:
            if f.note:
                print(f"- {f.name}: {f.note}")
    print(f"\nlogs: {a.log_dir}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
