"""End to end: the real `fastforward` process between real sockets and the fake Blueflood."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest

from .conftest import (
    ANY_PORT,
    TENANT,
    FakeBlueflood,
    FakeIdentity,
    frame,
    free_port,
    send_tcp,
    wait_until,
)
from .helpers import obey_file_permissions, scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def base_args(bf: FakeBlueflood, *extra: str) -> list[str]:
    """A pickle listener on a port the kernel picks (``Process.port()`` reads it back)."""
    return ["-e", ANY_PORT, "-b", bf.url, "-t", TENANT, "-i", "0.2",
            *extra]  # fmt: skip


# ---- the original's integration scenarios ---------------------------------------------------


def test_noauth(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    ff = run_ff(*base_args(fake_blueflood))
    port = ff.port()
    ts = int(time.time())
    send_tcp(port, frame([("foo.bar.baz", (ts, 10.0))]))
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 1)
    req = fake_blueflood.ingests()[0]
    assert req.path == "/v2.0/tenant/ingest"
    assert req.headers["Content-Type"] == "application/json"
    metrics = json.loads(req.body)
    assert metrics == [
        {"collectionTime": ts * 1000, "ttlInSeconds": 86400, "metricValue": 10.0,
         "metricName": "foo.bar.baz"}
    ]  # fmt: skip
    assert ff.terminate() == 0


def test_auth_sends_the_token_header(fake_identity: FakeIdentity, run_ff) -> None:  # noqa: ANN001
    with FakeBlueflood(identity=fake_identity) as bf:
        ff = run_ff(
            *base_args(bf, "-u", "alice", "-k", "k3y", "--auth_url", fake_identity.tokens_url)
        )
        port = ff.port()
        send_tcp(port, frame([("foo.bar.baz", (int(time.time()), 10.0))]))
        bf.wait_for(lambda: bf.stored == 1)
        token = bf.ingests()[0].headers["X-Auth-Token"]
        assert fake_identity.is_valid(token)
        assert fake_identity.issued == 1
        assert "k3y" not in ff.stderr  # never log the key
        assert ff.terminate() == 0


def test_splitting_payload_under_limit(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    limit = 1024
    ff = run_ff(*base_args(fake_blueflood, "--limit", str(limit)))
    port = ff.port()
    ts = int(time.time())
    one = len(json.dumps({"collectionTime": ts * 1000, "ttlInSeconds": 86400,
                          "metricValue": 10.0, "metricName": "foo.bar.baz.000"}))  # fmt: skip
    count = limit // one + 5
    send_tcp(port, frame([(f"foo.bar.baz.{i:03d}", (ts, 10.0)) for i in range(count)]))
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == count)
    bodies = [r.body for r in fake_blueflood.ingests()]
    assert len(bodies) > 1
    assert all(len(b) <= limit for b in bodies)
    assert fake_blueflood.duplicates == 0
    assert ff.terminate() == 0


# ---- listeners ------------------------------------------------------------------------------


def test_plaintext_over_tcp_and_udp(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    ff = run_ff(
        *base_args(fake_blueflood),
        "--line-endpoint", ANY_PORT,
        "--line-endpoint", "udp:port=0:interface=127.0.0.1",
    )  # fmt: skip
    pickle_port = ff.port()
    tcp_port = ff.port("tcp", "line")
    udp_port = ff.port("udp", "line")
    ts = int(time.time())
    # carbon-relay sends CRLF-terminated lines; the last line has no newline at all.
    send_tcp(tcp_port, f"line.tcp.a 1 {ts}\r\nline.tcp.b 2.5 {ts}\nline.tcp.c 3 {ts}".encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(f"line.udp.a 4 {ts}\nline.udp.b 5 {ts}".encode(), ("127.0.0.1", udp_port))
    send_tcp(pickle_port, frame([("pickle.a", (ts, 6))]))
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 6)
    assert fake_blueflood.points(TENANT, "line.udp.b") == {ts * 1000: 5}
    assert fake_blueflood.points(TENANT, "line.tcp.b") == {ts * 1000: 2.5}
    assert ff.terminate() == 0


def test_line_protocol_on_the_main_endpoint(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    ff = run_ff(*base_args(fake_blueflood, "--protocol", "MetricLineReceiver"))
    port = ff.port("tcp", "line")
    send_tcp(port, f"a.b 1 {int(time.time())}\n".encode())
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 1)
    assert ff.terminate() == 0


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


def test_tls_ingest(fake_blueflood: FakeBlueflood, run_ff, tmp_path: Path) -> None:  # noqa: ANN001
    key, cert = _self_signed(tmp_path)
    ff = run_ff(
        "-e", f"ssl:port=0:privateKey={key}:certKey={cert}:interface=127.0.0.1",
        "-b", fake_blueflood.url, "-t", TENANT, "-i", "0.2",
    )  # fmt: skip
    port = ff.port("ssl")
    ctx = ssl.create_default_context(cafile=cert)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(frame([("tls.metric", (int(time.time()), 42))]))
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 1)
    # A plaintext client on the TLS port is logged and closed; the listener keeps working.
    send_tcp(port, frame([("not.tls", (int(time.time()), 1))]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(frame([("tls.metric2", (int(time.time()), 43))]))
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 2)
    assert ff.terminate() == 0
    assert "TLS handshake" in ff.stderr


def test_config_file(fake_blueflood: FakeBlueflood, run_ff, tmp_path: Path) -> None:  # noqa: ANN001
    conf = tmp_path / "ff.conf"
    conf.write_text(
        "[blueflood_carbon_forwarder]\n"
        f"endpoint=tcp:port=0:interface=127.0.0.1\n"
        "interval=0.2\n"
        f"blueflood={fake_blueflood.url}\n"
        f"tenant={TENANT}\n"
        "metric_prefix=pre\n"
        "ttl=3600\n"
        "user=\nkey=\nlimit=0\noverwrite_collection_timestamp=False\n"
    )
    ff = run_ff("-c", str(conf))
    port = ff.port()
    send_tcp(port, frame([("m", (int(time.time()), 1))]))
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 1)
    assert json.loads(fake_blueflood.ingests()[0].body)[0]["metricName"] == "pre.m"
    assert json.loads(fake_blueflood.ingests()[0].body)[0]["ttlInSeconds"] == 3600
    assert ff.terminate() == 0


# ---- robustness -----------------------------------------------------------------------------


def test_sigterm_drains_everything(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    # A long interval: nothing is flushed before SIGTERM unless a body fills up.
    ff = run_ff(*base_args(fake_blueflood)[:-2], "-i", "600")
    port = ff.port()
    ts = int(time.time())
    total = 0
    socks = []
    for c in range(4):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        data = b"".join(
            frame([(f"drain.{c}.{f}.{i}", (ts, i)) for i in range(500)]) for f in range(6)
        )
        s.sendall(data)  # connections stay open: the forwarder must read what they hold
        total += 6 * 500
        socks.append(s)
    assert ff.terminate() == 0
    for s in socks:
        s.close()
    assert fake_blueflood.stored == total
    assert fake_blueflood.duplicates == 0


def test_bad_input_on_one_connection_loses_nothing_on_another(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    ff = run_ff(*base_args(fake_blueflood, "--max-frame-bytes", "100000"))
    port = ff.port()
    ts = int(time.time())
    evil = frame([("x", (ts, 1))])[:4] + b"\x80\x02cposix\nsystem\nq\x00."  # forbidden GLOBAL
    bad = socket.create_connection(("127.0.0.1", port), timeout=10)
    good = socket.create_connection(("127.0.0.1", port), timeout=10)

    def bad_sender() -> None:
        for i in range(20):
            payload = evil[4:]
            bad.sendall(len(payload).to_bytes(4, "big") + payload)
            bad.sendall(frame([("after.bad", (ts, i))]))  # the connection keeps going
            bad.sendall(b"\x00\x00\x00\x05garba")  # a truncated pickle
            gevent.sleep(0)

    def good_sender() -> None:
        for f in range(10):
            good.sendall(frame([(f"good.{f}.{i}", (ts, i)) for i in range(500)]))
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(bad_sender), gevent.spawn(good_sender)], raise_error=True)
    # An oversize frame closes only its own connection.
    big = socket.create_connection(("127.0.0.1", port), timeout=10)
    big_peer = "{}:{}".format(*big.getsockname())
    big.sendall((200_000).to_bytes(4, "big") + b"x" * 1000)
    assert big.recv(1) == b""  # closed by the forwarder
    big.close()
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 5000 + 1)
    assert fake_blueflood.points(TENANT, "after.bad") == {ts * 1000: 19}
    bad_peer = "{}:{}".format(*bad.getsockname())
    bad.close()
    good.close()
    assert ff.terminate() == 0
    # Each loss names its sender and shows the start of what it sent, escaped.
    lines = ff.stderr.splitlines()
    refused = [ln for ln in lines if f"from {bad_peer}: bad_frame" in ln]
    assert len(refused) == 1 and "e.g. '\\x80\\x02cposix\\nsystem" in refused[0], refused
    oversize = [ln for ln in lines if f"from {big_peer}: oversize_frame" in ln]
    assert len(oversize) == 1 and "e.g. '\\x00\\x03\\r@xxxx" in oversize[0], oversize
    assert "bad pickle frame" in ff.stderr
    assert "forbidden opcode" in ff.stderr
    assert "over --max-frame-bytes" in ff.stderr
    assert "datapoints dropped reason=oversize_frame: 1" in ff.stderr  # losses at WARNING
    assert "Traceback" not in ff.stderr


def test_dry_run_writes_bodies_to_stdout(run_ff) -> None:  # noqa: ANN001
    ff = run_ff("--dry-run", "-i", "0.2", "-e", ANY_PORT)
    port = ff.port()
    ts = int(time.time())
    send_tcp(port, frame([("dry.run", (ts, 1.5))]))
    wait_until(lambda: "dry.run" in ff.stdout, what="a body on stdout")
    assert ff.terminate() == 0
    body = json.loads(ff.stdout.splitlines()[0])
    assert body == [{"collectionTime": ts * 1000, "ttlInSeconds": 86400, "metricValue": 1.5,
                     "metricName": "dry.run"}]  # fmt: skip


def test_fastforward_send_to_a_running_forwarder(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    ff = run_ff(*base_args(fake_blueflood))
    port = ff.port()
    ts = int(time.time())
    out = subprocess.run(
        [sys.executable, "-m", "fastforward", "send", "-e", f"tcp:{port}",
         "sent.a", "1", "sent.b", "2.5", str(ts)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert "sent 2 datapoints" in out.stdout
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 2)
    assert fake_blueflood.points(TENANT, "sent.b") == {ts * 1000: 2.5}
    assert ff.terminate() == 0


def test_pidfile_written_and_removed(fake_blueflood: FakeBlueflood, run_ff, tmp_path: Path) -> None:  # noqa: ANN001
    pidfile = tmp_path / "ff.pid"
    ff = run_ff(*base_args(fake_blueflood), "-n", "--pidfile", str(pidfile))
    assert pidfile.read_text().strip() == str(ff.proc.pid)
    assert ff.terminate() == 0
    assert not pidfile.exists()


def test_twistd_layout_and_logfile(fake_blueflood: FakeBlueflood, run_ff, tmp_path: Path) -> None:  # noqa: ANN001
    log = tmp_path / "log.txt"
    ff = run_ff(
        "-n", "-l", str(log), "--logger", "some.observer", "blueflood-forward",
        *base_args(fake_blueflood), log=log,
    )  # fmt: skip
    port = ff.port()
    send_tcp(port, frame([("m", (int(time.time()), 1))]))
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 1)
    assert ff.terminate() == 0
    text = log.read_text()
    assert "--logger 'some.observer' is not supported" in text
    assert "fastforward stopped" in text


def test_log_dir_rotation(fake_blueflood: FakeBlueflood, run_ff, tmp_path: Path) -> None:  # noqa: ANN001
    log_dir = tmp_path / "logs"
    env = {"LOG_DIR": str(log_dir), "LOG_ROTATE_LENGTH": "300", "MAX_LOG_ROTATED_FILES": "2",
           "TWISTED_LOG_LEVEL": "info"}  # fmt: skip
    log = log_dir / "carbon_forwarder.log"
    ff = run_ff(*base_args(fake_blueflood), env=env, wait=False)
    wait_until(lambda: (log_dir / "carbon_forwarder.log.1").exists(), what="a rotated log")
    assert ff.terminate() == 0
    assert log.exists()
    assert not (log_dir / "carbon_forwarder.log.3").exists()
    assert ff.stderr == ""


def test_busy_port_is_a_startup_failure(run_ff) -> None:  # noqa: ANN001
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        ff = run_ff("--dry-run", "-e", f"tcp:port={port}:interface=127.0.0.1", wait=False)
        assert ff.wait(30) == 3
    lines = [ln for ln in ff.stderr.splitlines() if ln.startswith("fastforward:")]
    assert lines and f"tcp:port={port}" in lines[0] and "in use" in lines[0]
    assert "Traceback" not in ff.stderr


def test_bad_option_exit_code(run_ff) -> None:  # noqa: ANN001
    ff = run_ff("--ttl", "0", "-t", "t", wait=False)
    assert ff.wait(30) == 2
    assert ff.stderr.splitlines()[0] == "fastforward: --ttl 0: must be between 1 and 2147483646"


def test_env_only_configuration(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    env = {"FASTFORWARD_ENDPOINT": ANY_PORT,
           "FASTFORWARD_BLUEFLOOD": fake_blueflood.url, "FASTFORWARD_TENANT": TENANT,
           "FASTFORWARD_INTERVAL": "0.2"}  # fmt: skip
    ff = run_ff(env=env)
    port = ff.port()
    send_tcp(port, frame([("env.m", (int(time.time()), 1))]))
    fake_blueflood.wait_for(lambda: fake_blueflood.stored == 1)
    assert ff.terminate() == 0
    assert os.environ.get("FASTFORWARD_TENANT") is None


def test_admin_endpoint_spool_and_self_metrics(
    fake_blueflood: FakeBlueflood,
    run_ff,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    import requests

    ff = run_ff(
        *base_args(fake_blueflood),
        "--admin-endpoint", ANY_PORT,
        "--spool-dir", str(tmp_path / "spool"),
        "--self-metrics-prefix", "ff.self",
    )  # fmt: skip
    port = ff.port()
    admin = ff.admin_port
    send_tcp(port, frame([("m", (int(time.time()), 1))]))
    fake_blueflood.wait_for(lambda: fake_blueflood.points(TENANT, "m"))
    base = f"http://127.0.0.1:{admin}"
    assert requests.get(f"{base}/health", timeout=5).status_code == 200
    wait_until(
        lambda: (
            "fastforward_datapoints_sent_total 1.0"
            in requests.get(f"{base}/metrics", timeout=5).text
        ),
        what="datapoints_sent in /metrics",
    )
    fake_blueflood.wait_for(
        lambda: any(name.startswith("ff.self.") for _t, name in list(fake_blueflood.store)),
    )
    assert ff.terminate() == 0


def test_second_signal_exits_at_once(fake_blueflood: FakeBlueflood, run_ff) -> None:  # noqa: ANN001
    fake_blueflood.delay = 30.0  # a Blueflood that never answers in time
    ff = run_ff(*base_args(fake_blueflood), "--drain-timeout", "60")
    port = ff.port()
    send_tcp(port, frame([("stuck", (int(time.time()), 1))]))
    wait_until(lambda: fake_blueflood.in_flight > 0, what="a POST in flight")
    ff.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "draining" in ff.stderr, what="the drain to begin")
    ff.proc.send_signal(signal.SIGINT)
    assert ff.wait(10) == 1
    assert "exiting now without draining" in ff.stderr


# ---- bad configuration is refused at start --------------------------------------------------

BAD_URLS = [
    ("http//blueflood:19000", "--blueflood 'http//blueflood:19000': not a URL"),
    ("http://blueflood:notaport", "--blueflood 'http://blueflood:notaport': port 'notaport'"),
    ("http://", "--blueflood 'http://': no host name"),
    ("http://blueflood:19000/v2.0/1/ingest", "would double it"),
]


def _refusal(ff, code: int) -> str:  # noqa: ANN001
    """The one line stating why the start was refused; nothing else but warnings and logs."""
    assert ff.wait(30) == code, ff.stderr
    assert "Traceback" not in ff.stderr
    lines = [ln for ln in ff.stderr.splitlines() if ln.startswith("fastforward: ")]
    problems = [ln for ln in lines if not ln.startswith("fastforward: warning: ")]
    assert len(problems) == 1, ff.stderr
    return problems[0]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_malformed_blueflood_url_is_refused(run_ff, url: str, message: str) -> None:  # noqa: ANN001
    ff = run_ff("-e", ANY_PORT, "-t", "t", "-b", url,
                wait=False)  # fmt: skip
    assert message in _refusal(ff, 2)


def test_misspelt_names_are_named_beside_the_refusal(run_ff, tmp_path: Path) -> None:  # noqa: ANN001
    conf = tmp_path / "ff.conf"
    conf.write_text("[blueflood_carbon_forwarder]\nendpoint=tcp:0\ntenent=111\n")
    ff = run_ff("-c", str(conf), env={"FASTFORWARD_SPOOLDIR": str(tmp_path)}, wait=False)
    assert _refusal(ff, 2).startswith("fastforward: --tenant is required")
    assert (
        "fastforward: warning: config file " + str(conf) + ": unknown key 'tenent' ignored "
        "(did you mean tenant, the --tenant option?)"
    ) in ff.stderr
    assert "FASTFORWARD_SPOOLDIR is not a fastforward setting; ignored (did you mean " \
        "FASTFORWARD_SPOOL_DIR, the --spool-dir option?)" in ff.stderr  # fmt: skip


def test_misspelt_variable_is_warned_about_when_the_start_succeeds(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
) -> None:
    env = {"FASTFORWARD_SPOOLDIR": "/var/spool/fastforward", "FASTFORWARD_TEST_ANYTHING": "1"}
    ff = run_ff(*base_args(fake_blueflood), env=env)
    assert "FASTFORWARD_SPOOLDIR is not a fastforward setting" in ff.stderr
    assert "FASTFORWARD_TEST_ANYTHING" not in ff.stderr  # the test suite's own: known
    assert "spool off" in ff.stderr
    assert ff.terminate() == 0


def test_unwritable_spool_directory_is_refused(run_ff, tmp_path: Path) -> None:  # noqa: ANN001
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(0o555)
    listen = ANY_PORT
    ff = run_ff("--dry-run", "-e", listen, "--spool-dir", str(spool), wait=False,
                preexec_fn=obey_file_permissions)  # fmt: skip
    line = _refusal(ff, 3)
    assert line == f"fastforward: --spool-dir {str(spool)!r}: cannot write a file there: " \
        "Permission denied"  # fmt: skip
    assert os.listdir(spool) == []


def test_spool_directory_of_another_blueflood_is_refused(
    fake_blueflood: FakeBlueflood,
    run_ff,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    elsewhere = f"http://127.0.0.1:{free_port()}"  # another Blueflood, down: nothing listens
    ff = run_ff("-e", ANY_PORT, "-b", elsewhere, "-t", TENANT,
                "-i", "0.2", "--spool-dir", str(spool), "--drain-timeout", "0.5",
                "--admin-endpoint", ANY_PORT)  # fmt: skip
    port, admin = ff.port(), ff.admin_port
    send_tcp(port, frame([("kept.for.elsewhere", (int(time.time()), 1))]))
    wait_until(lambda: scrape(admin).get("fastforward_retries_total", cause="connection") > 0,
               what="a failed POST")  # fmt: skip
    assert ff.terminate() == 0
    assert list(spool.glob("*.ffspool"))
    ff = run_ff(*base_args(fake_blueflood), "--spool-dir", str(spool), wait=False)
    line = _refusal(ff, 3)
    assert line.startswith(f"fastforward: --spool-dir {str(spool)!r}: holds 1 files for "
                           f"Blueflood {elsewhere}, not {fake_blueflood.url}")  # fmt: skip
    assert f"run with -b {elsewhere} until it is empty" in line
    assert fake_blueflood.stored == 0
