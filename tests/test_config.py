"""The option table, precedence (CLI > env > INI > defaults), the original's INI and flags."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from fastforward.config import OPTIONS, Config, ConfigError, UsageError, load

ORIGINAL_EXAMPLE_CONF = """\
[blueflood_carbon_forwarder]

endpoint=tcp:2004
interval=30
blueflood=http://localhost:19000
tenant=
metric_prefix=
ttl=86400
user=
key=
auth_url=https://identity.api.rackspacecloud.com/v2.0/tokens
limit=0
overwrite_collection_timestamp=False
"""


def ini(tmp_path: Path, body: str) -> str:
    path = tmp_path / "ff.conf"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_defaults_match_the_original() -> None:
    c = load(["-t", "t1"], environ={}).config
    assert c.endpoint == ["tcp:2004"]
    assert c.interval == 30.0
    assert c.blueflood == "http://localhost:19000"
    assert c.ttl == 86400
    assert c.auth_url == "https://identity.api.rackspacecloud.com/v2.0/tokens"
    assert c.limit == 0 and c.body_bytes == 1_000_000
    assert c.protocol == "MetricPickleReceiver"
    assert c.overwrite_collection_timestamp is False


def test_config_fields_match_the_table() -> None:
    table = {o.name for o in OPTIONS if o.field}
    assert table == set(Config.__dataclass_fields__)


def test_original_short_and_long_switches() -> None:
    argv = [
        "-e", "tcp:2005", "-i", "5", "-b", "http://bf:19000", "-t", "tenant", "-p", "pre",
        "--ttl", "100", "-u", "me", "-k", "secret", "--auth_url", "http://id/v2.0/tokens",
        "--limit", "1024", "--protocol", "MetricLineReceiver", "--overwrite_collection_timestamp",
    ]  # fmt: skip
    c = load(argv, environ={}).config
    assert c.endpoint == ["tcp:2005"]
    assert (c.interval, c.blueflood, c.tenant, c.metric_prefix) == (
        5.0,
        "http://bf:19000",
        "tenant",
        "pre",
    )
    assert (c.ttl, c.user, c.key, c.auth_url) == (100, "me", "secret", "http://id/v2.0/tokens")
    assert (c.limit, c.protocol, c.overwrite_collection_timestamp) == (
        1024,
        "MetricLineReceiver",
        True,
    )
    assert c.line_protocol


def test_hyphenated_spellings() -> None:
    c = load(
        ["-t", "t", "--metric-prefix", "x", "--auth-url", "http://a/", "--max-frame-bytes", "2048",
         "--line-endpoint", "udp:2003", "--line-endpoint", "tcp:2003",
         "--overwrite-collection-timestamp=false"],
        environ={},
    ).config  # fmt: skip
    assert c.metric_prefix == "x" and c.auth_url == "http://a/" and c.max_frame_bytes == 2048
    assert c.line_endpoint == ["udp:2003", "tcp:2003"]
    assert c.overwrite_collection_timestamp is False


def test_original_example_conf_is_read(tmp_path: Path) -> None:
    path = ini(tmp_path, ORIGINAL_EXAMPLE_CONF.replace("tenant=", "tenant=abc"))
    c = load(["-c", path], environ={}).config
    assert c.tenant == "abc" and c.endpoint == ["tcp:2004"] and c.interval == 30.0
    assert c.overwrite_collection_timestamp is False


def test_precedence_cli_over_env_over_ini_over_default(tmp_path: Path) -> None:
    path = ini(
        tmp_path,
        """
        [blueflood_carbon_forwarder]
        tenant = from_ini
        ttl = 111
        interval = 7
        metric-prefix = ini_prefix
        """,
    )
    env = {"FASTFORWARD_TTL": "222", "FASTFORWARD_INTERVAL": "8"}
    c = load(["-c", path, "-i", "9"], environ=env).config
    assert c.interval == 9.0  # command line beats env and INI
    assert c.ttl == 222  # env beats INI
    assert c.tenant == "from_ini" and c.metric_prefix == "ini_prefix"  # INI beats defaults
    assert c.limit == 0  # default


def test_command_line_beats_config_file_unlike_the_original(tmp_path: Path) -> None:
    # The twistd plugin let the file override the command line; we document the change.
    path = ini(tmp_path, "[blueflood_carbon_forwarder]\ntenant=file\n")
    assert load(["-c", path, "-t", "cli"], environ={}).config.tenant == "cli"


def test_every_option_has_an_env_var() -> None:
    env = {"FASTFORWARD_TENANT": "e", "FASTFORWARD_ENDPOINT": "tcp:1,udp:2",
           "FASTFORWARD_GZIP": "yes", "FASTFORWARD_DRY_RUN": "0"}  # fmt: skip
    c = load([], environ=env).config
    assert c.tenant == "e" and c.endpoint == ["tcp:1", "udp:2"] and c.gzip is True
    assert all(o.env_var.startswith("FASTFORWARD_") for o in OPTIONS if o.env)


def test_config_file_from_env_and_twisted_log_level(tmp_path: Path) -> None:
    path = ini(tmp_path, "[blueflood_carbon_forwarder]\ntenant=f\n")
    c = load([], environ={"FASTFORWARD_CONFIG": path, "TWISTED_LOG_LEVEL": "WARN"}).config
    assert c.tenant == "f" and c.log_level == "warn"


def test_dry_run_needs_no_tenant() -> None:
    assert load(["--dry-run"], environ={}).config.blueflood == "-"
    assert load(["-b", "-"], environ={}).config.dry_run


def test_scheme_less_blueflood_url_of_the_docker_image() -> None:
    assert load(["-t", "t", "-b", "localhost:19000"], environ={}).config.blueflood == (
        "http://localhost:19000"
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "--tenant is required"),
        (["-t", "a/b"], "'a/b'"),
        (["-t", "a.b"], "'a.b'"),
        (["-t", "t", "--ttl", "0"], "--ttl 0"),
        (["-t", "t", "--ttl", "2147483647"], "--ttl 2147483647"),
        (["-t", "t", "--limit", "2000000"], "--limit 2000000"),
        (["-t", "t", "--limit", "-1"], "--limit -1"),
        (["-t", "t", "-i", "abc"], "'abc' is not a number"),
        (["-t", "t", "--ttl", "1.5"], "'1.5' is not an integer"),
        (["-t", "t", "--protocol", "Foo"], "--protocol 'Foo'"),
        (["-t", "t", "-e", "http:80"], "'http:80'"),
        (["-t", "t", "-u", "me"], "--user 'me': needs --key"),
        (["-t", "t", "--gzip=maybe"], "'maybe' is not a boolean"),
        (["-t", "t", "--workers", "0"], "--workers '0'"),
        (["-t", "t", "--log-level", "loud"], "--log-level 'loud'"),
        (["-t", "t", "-b", "ftp://x"], "--blueflood 'ftp://x'"),
        (["-t", "t", "--max-connections", "0"], "--max_connections 0"),
    ],
)
def test_bad_values_name_option_and_value(argv: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(argv, environ={})
    assert needle in str(info.value)


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="FASTFORWARD_TTL.*'x'"):
        load(["-t", "t"], environ={"FASTFORWARD_TTL": "x"})


def test_bad_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no \\[blueflood_carbon_forwarder\\] section"):
        load(["-c", ini(tmp_path, "[other]\na=1\n")], environ={})
    with pytest.raises(ConfigError, match="missing.conf"):
        load(["-c", str(tmp_path / "missing.conf")], environ={})
    loaded = load(
        ["-c", ini(tmp_path, "[blueflood_carbon_forwarder]\ntenant=t\nbogus=1\n")], environ={}
    )
    assert any("bogus" in w for w in loaded.warnings)


def test_unknown_switch_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--no-such-thing"):
        load(["--no-such-thing"], environ={})


def test_twistd_options_are_accepted() -> None:
    loaded = load(
        ["-n", "--pidfile", "/tmp/x.pid", "-l", "-", "--logger", "my.observer", "--syslog",
         "--umask", "022", "-r", "epoll", "-t", "t"],
        environ={},
    )  # fmt: skip
    c = loaded.config
    assert c.pidfile == "/tmp/x.pid" and c.logfile == "-"
    text = "\n".join(loaded.warnings)
    for name in ("--logger 'my.observer'", "--syslog", "--umask", "--reactor"):
        assert name in text


def test_other_twistd_options_warn_never_fail() -> None:
    loaded = load(["-t", "t", "--rundir", "/", "--uid", "0", "--no_save", "-d", "/tmp"], environ={})
    text = "\n".join(loaded.warnings)
    for flag in ("--rundir", "--uid", "--no_save", "-d"):
        assert f"option {flag} is not supported" in text


def test_twistd_command_layout() -> None:
    # twistd -u / -p before the tap name mean uid / profile: ignored with a warning there,
    # while after it they are our --user / --metric_prefix.
    loaded = load(
        ["twistd", "-n", "-l", "log.txt", "-u", "0", "--pidfile", "/tmp/p", "blueflood-forward",
         "-t", "t", "-u", "me", "-k", "key", "-p", "pre"],
        environ={},
    )  # fmt: skip
    c = loaded.config
    assert (c.logfile, c.pidfile, c.user, c.key, c.metric_prefix) == (
        "log.txt", "/tmp/p", "me", "key", "pre"
    )  # fmt: skip
    assert any("-u" in w for w in loaded.warnings)


def test_key_is_not_in_repr() -> None:
    c = load(["-t", "t", "-u", "me", "-k", "s3cret"], environ={}).config
    assert "s3cret" not in repr(c)
    assert c.redacted()["key"] == "***"


def test_encoder_options() -> None:
    c = load(["-t", "t", "-p", "pre", "--limit", "1024", "--max-past", "60"], environ={}).config
    opts = c.encoder_options()
    assert opts["prefix"] == "pre" and opts["max_body_bytes"] == 1024
    assert opts["max_past_ms"] == 60_000


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http//blueflood:19000", "no '://'"),
        ("http://host:notaport", "port 'notaport' is not a number"),
        ("http://host:99999", "port '99999' is not a number"),
        ("http://", "no host name"),
        ("http://:19000", "no host name"),
        ("http://host:", "port is missing"),
        ("ftp://host:21", "scheme must be http or https"),
        ("http://host:19000/v2.0/123/ingest", "would double it"),
        ("http://host:19000/v2.0", "would double it"),
        ("http://host:19000?tenant=1", "no query"),
        ("http://ho st:19000", "contains spaces"),
    ],
)
def test_malformed_blueflood_url_is_refused(url: str, problem: str) -> None:
    with pytest.raises(
        ConfigError, match=f"^--blueflood {re.escape(repr(url))}: .*{problem}"
    ) as caught:
        load(["-t", "t", "-b", url], environ={})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("localhost:19000", "http://localhost:19000"),  # the original docker image's default
        ("HTTPS://bf.example:443/", "https://bf.example:443"),
        ("http://[::1]:19000", "http://[::1]:19000"),
        ("http://proxy.example/blueflood/", "http://proxy.example/blueflood"),
    ],
)
def test_good_blueflood_urls_are_normalised(url: str, normalised: str) -> None:
    assert load(["-t", "t", "-b", url], environ={}).config.blueflood == normalised


def test_tenant_with_a_newline_is_refused() -> None:
    with pytest.raises(ConfigError, match="--tenant"):
        load(["-t", "a\nb"], environ={})


def test_misspelt_environment_variable_is_warned_about_with_a_hint() -> None:
    env = {
        "FASTFORWARD_SPOOLDIR": "/var/spool/ff",
        "FASTFORWARD_TENANT": "t",
        # known although not options: build switches and the test suite's variables
        "FASTFORWARD_NO_EXTENSIONS": "1",
        "FASTFORWARD_REQUIRE_EXTENSION": "1",
        "FASTFORWARD_TEST_OUTAGE_SECONDS": "20",
    }
    loaded = load([], environ=env)
    assert loaded.config.spool_dir == ""
    assert loaded.warnings == [
        "environment variable FASTFORWARD_SPOOLDIR is not a fastforward setting; ignored "
        "(did you mean FASTFORWARD_SPOOL_DIR, the --spool-dir option?)"
    ]


def test_warnings_survive_a_refused_start(tmp_path: Path) -> None:
    path = ini(tmp_path, "[blueflood_carbon_forwarder]\ntenent=111\n")
    with pytest.raises(ConfigError, match="--tenant is required") as caught:
        load(["-c", path], environ={"FASTFORWARD_SPOOLDIR": "/x"})
    warnings = caught.value.warnings  # type: ignore[attr-defined]
    assert any("FASTFORWARD_SPOOLDIR" in w and "FASTFORWARD_SPOOL_DIR" in w for w in warnings)
    assert any(
        "'tenent'" in w and "did you mean tenant, the --tenant option" in w for w in warnings
    )


def test_unknown_config_key_is_reported_even_beside_a_bad_value(tmp_path: Path) -> None:
    path = ini(tmp_path, "[blueflood_carbon_forwarder]\ntenant=t\nttl=soon\nintervall=5\n")
    with pytest.raises(ConfigError, match="ttl") as caught:
        load(["-c", path], environ={})
    assert any("'intervall'" in w and "interval" in w for w in caught.value.warnings)  # type: ignore[attr-defined]


def test_misspelt_option_gets_a_hint() -> None:
    with pytest.raises(UsageError, match=r"--spooldir .*did you mean --spool-dir\?"):
        load(["-t", "t", "--spooldir", "/x"], environ={})


# ---------------------------------------------------------------------------------------------
# one declaration per option: everything else is derived from the Config fields

# A value other than the default for every setting, as a user types it, and what Config holds.
# A new Config field fails test_every_setting_is_read_from_every_source until it is added here.
GIVEN = {
    "endpoint": ("tcp:2005", ["tcp:2005"]),
    "protocol": ("line", "MetricLineReceiver"),
    "line_endpoint": ("udp:2003", ["udp:2003"]),
    "blueflood": ("bf.example:19000", "http://bf.example:19000"),
    "tenant": ("t42", "t42"),
    "metric_prefix": ("pre", "pre"),
    "ttl": ("3600", 3600),
    "interval": ("2.5", 2.5),
    "limit": ("4096", 4096),
    "max_body_datapoints": ("10", 10),
    "overwrite_collection_timestamp": ("yes", True),
    "gzip": ("on", True),
    "ingest_multi": ("on", True),
    "concurrency": ("8", 8),
    "request_timeout": ("3", 3.0),
    "user": ("me", "me"),
    "key": ("s3cret", "s3cret"),
    "password": ("", ""),  # --key and --password exclude each other; key stands for both
    "auth_url": ("http://id.example/v2.0/tokens", "http://id.example/v2.0/tokens"),
    "rules": ("/etc/ff/rules.toml", "/etc/ff/rules.toml"),
    "storage_schemas": ("/etc/carbon/storage-schemas.conf", "/etc/carbon/storage-schemas.conf"),
    "tags": ("Flatten", "flatten"),
    "series_budget_warmup": ("0", 0.0),
    "tenant_idle_timeout": ("30", 30.0),
    "route_cache_names": ("5000", 5000),
    "max_frame_bytes": ("4096", 4096),
    "max_connections": ("10", 10),
    "idle_timeout": ("0", 0.0),
    "max_connection_age": ("60", 60.0),
    "max_buffer_bytes": ("2_000_000", 2_000_000),
    "max_past": ("-1", -1.0),
    "max_future": ("1e3", 1000.0),
    "drain_timeout": ("5", 5.0),
    "spool_dir": ("/var/spool/ff", "/var/spool/ff"),
    "spool_max_bytes": ("1e6", 1_000_000),
    "admin_endpoint": ("tcp:port=9108:interface=127.0.0.1", "tcp:port=9108:interface=127.0.0.1"),
    "self_metrics_prefix": ("ff.self", "ff.self"),
    "workers": ("AUTO", "auto"),
    "logfile": ("ff.log", "ff.log"),
    "log_level": ("WARN", "warn"),
    "pidfile": ("ff.pid", "ff.pid"),
}
SETTINGS = [o for o in OPTIONS if o.field]


def test_the_option_table_is_the_config_dataclass() -> None:
    defaults = Config()
    assert [o.name for o in SETTINGS] == list(Config.__dataclass_fields__)
    for opt in SETTINGS:
        assert opt.default == getattr(defaults, opt.name), opt.name
        python_type = {"str": str, "int": int, "float": float, "bool": bool, "list": list}
        assert type(opt.default) is python_type[opt.kind], opt.name


@pytest.mark.parametrize("source", ["snake", "kebab", "short", "env", "ini", "ini-kebab"])
def test_every_setting_is_read_from_every_source(source: str, tmp_path: Path) -> None:
    assert set(GIVEN) == {o.name for o in SETTINGS}, "add the new setting to GIVEN"
    argv: list[str] = []
    env: dict[str, str] = {}
    lines = ["[blueflood_carbon_forwarder]"]
    for opt in SETTINGS:
        text = GIVEN[opt.name][0]
        if source == "env":
            env[opt.env_var] = text
        elif source.startswith("ini"):
            key = opt.name.replace("_", "-") if source == "ini-kebab" else opt.name
            lines.append(f"{key} = {text}")
        else:
            flags = opt.flags
            flag = {"snake": flags[-2 if len(flags) > 2 else -1], "kebab": flags[-1]}.get(
                source, flags[0]
            )
            argv += [f"{flag}={text}"] if opt.kind == "bool" else [flag, text]
    if source.startswith("ini"):
        path = tmp_path / "ff.conf"
        path.write_text("\n".join(lines) + "\n")
        argv = ["-c", str(path)]
    loaded = load(argv, environ=env)
    assert loaded.warnings == []
    for name, (_text, expected) in GIVEN.items():
        assert getattr(loaded.config, name) == expected, (source, name)


def test_the_parser_has_exactly_the_declared_flags() -> None:
    from fastforward.config import build_parser

    declared = {f for o in OPTIONS for f in o.flags}
    others = 0
    for action in build_parser()._actions:
        for flag in set(action.option_strings) - declared - {"-h", "--help", "-V", "--version"}:
            # twistd's own switches: accepted with a warning, never used
            value = [] if action.nargs == 0 else ["x"]
            loaded = load(["-t", "t", flag, *value], environ={})
            assert loaded.warnings == [f"twistd option {flag} is not supported by fastforward; "
                                       "ignored"]  # fmt: skip
            others += 1
    assert declared <= {f for a in build_parser()._actions for f in a.option_strings}
    assert others > 0


def test_options_of_derives_names_types_defaults_and_spellings() -> None:
    from dataclasses import dataclass

    from fastforward.options import option, options_of

    @dataclass(frozen=True)
    class Toy:
        spool_max_files: int = option(7, section="limits", help="How many.", metavar="N")
        hosts: list[str] = option(["a"], short="H", section="listening", help="Hosts.")

    spool, hosts = options_of(Toy)
    assert (spool.name, spool.kind, spool.default) == ("spool_max_files", "int", 7)
    assert spool.flags == ["--spool_max_files", "--spool-max-files"]
    assert spool.env_var == "FASTFORWARD_SPOOL_MAX_FILES"
    assert (hosts.kind, hosts.default, hosts.flags) == ("list", ["a"], ["-H", "--hosts"])
    assert Toy().hosts is not Toy().hosts  # a list default is not shared between instances

    @dataclass
    class Undeclared:
        size: int = 3

    with pytest.raises(TypeError, match="not declared with option"):
        options_of(Undeclared)


def test_secret_settings_stay_out_of_repr_and_logs() -> None:
    c = load(["-t", "t", "-u", "me", "--password", "pw0rd"], environ={}).config
    assert "pw0rd" not in repr(c)
    assert c.redacted()["password"] == "***" and c.redacted()["user"] == "me"


def test_a_tiny_negative_window_disables_it_as_documented() -> None:
    # "negative disables": also for a value that rounds to 0 ms
    c = load(["-t", "t", "--max-past", "-0.0001", "--max-future", "-1"], environ={}).config
    opts = c.encoder_options()
    assert opts["max_past_ms"] < 0 and opts["max_future_ms"] < 0


def test_a_bad_value_on_the_command_line_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^option --ttl: '1\.5' is not an integer$"):
        load(["-t", "t", "--ttl", "1.5"], environ={})


# ---------------------------------------------------------------------------------------------
# `fastforward decode` takes the daemon's options from the same fields


def _decode_run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from fastforward import decode

    rc = decode.main(args)
    return rc, capsys.readouterr().err


def test_decode_accepts_every_spelling_of_its_daemon_options() -> None:
    from fastforward import decode

    parser = decode._parser()
    flags = {f for action in parser._actions for f in action.option_strings}
    for name in decode.SHARED_OPTIONS:
        opt = next(o for o in OPTIONS if o.name == name)
        assert set(opt.flags) <= flags, name


def test_decode_help_shows_the_daemon_help_and_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fastforward import decode

    assert decode.main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in decode.SHARED_OPTIONS:
        opt = next(o for o in OPTIONS if o.name == name)
        assert f"{opt.help} (default: {opt.shown_default})" in out, name


@pytest.mark.parametrize(
    "args",
    [["--ttl", "0"], ["--limit", "2000000"], ["--max-frame-bytes", "8"], ["--protocol", "json"]],
)
def test_decode_refuses_what_the_daemon_refuses_with_its_words(
    args: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    capture = tmp_path / "empty.bin"
    capture.write_bytes(b"")
    with pytest.raises(ConfigError) as daemon:
        load(["-t", "t", *args], environ={})
    rc, err = _decode_run([*args, str(capture)], capsys)
    assert rc == 2
    assert f"fastforward decode: error: {daemon.value}" in err
