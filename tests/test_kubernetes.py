"""deploy/kubernetes: rendered by the real ``kubectl kustomize``, every object validated against
the Kubernetes JSON schemas (``kubernetes-validate``, which ships them: no network), and the
properties that keep data safe checked on what a cluster would receive.

fastforward's settings in a pod come from its command line, its environment and the config
file mounted from the ConfigMap; ``effective_config`` feeds all three to fastforward's own
loader, so the checks see the values the process would run with, wherever they are set.
"""

from __future__ import annotations

import configparser
import copy
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fastforward import config
from fastforward.endpoints import parse_endpoint
from fastforward.framing import READ_BUFFER
from fastforward.workers.supervisor import DRAIN_MARGIN

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
VARIANTS = {
    "base": KUSTOMIZE,
    "stateless": KUSTOMIZE / "overlays" / "stateless",
    "prometheus-operator": KUSTOMIZE / "overlays" / "prometheus-operator",
}
# The oldest Kubernetes the manifests are written for (the preStop `sleep` action is on by
# default from 1.30) and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# Custom resources: no schema in kubernetes-validate, checked field by field below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "PodMonitor")}
WORKLOAD_KINDS = ("StatefulSet", "Deployment")
CONTAINER = "fastforward"
KUBECTL = shutil.which("kubectl")

# Measured by bench/e2e.py (README "Performance"): RSS flat at 45 MB while forwarding 1.87M
# datapoints/s, 89 MB at the peak of a 1,000,000-datapoint burst.
SUSTAINED_RSS_BYTES = 45_000_000
BURST_PEAK_RSS_BYTES = 89_000_000
SECRET_VARIABLES = {"FASTFORWARD_KEY", "FASTFORWARD_PASSWORD", "KEYSTONE_KEY"}
SECRET_INI_KEYS = {"key", "password"}
# A Service port's name (before any "-udp") says what listens behind it.
SERVICE_PORT_NAMES = {"pickle": "pickle", "line": "plaintext"}


# ---------------------------------------------------------------------------------------------
# rendering


def kubectl() -> str:
    if KUBECTL is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is missing; .ci/run installs Debian's kubectl package")
        pytest.skip("kubectl not installed (Debian package kubectl); CI runs these tests")
    return KUBECTL


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize DIRECTORY`` prints."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory}: {proc.stderr}"
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    assert objects, f"kubectl kustomize {directory} rendered nothing"
    return objects


_RENDERED: dict[str, list[dict[str, Any]]] = {}


@pytest.fixture(params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def objects(variant: str) -> list[dict[str, Any]]:
    """The rendered objects of one variant; rendered once per run, each test gets a copy."""
    if variant not in _RENDERED:
        _RENDERED[variant] = render(VARIANTS[variant])
    return copy.deepcopy(_RENDERED[variant])


# ---------------------------------------------------------------------------------------------
# reading the rendered objects


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [o for o in objects if o["kind"] in WORKLOAD_KINDS]
    assert found, "no StatefulSet or Deployment rendered"
    return found


def workload(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (one,) = workloads(objects)
    return one


def pod_spec(work: dict[str, Any]) -> dict[str, Any]:
    return dict(work["spec"]["template"]["spec"])


def container(work: dict[str, Any]) -> dict[str, Any]:
    for c in pod_spec(work)["containers"]:
        if c["name"] == CONTAINER:
            return dict(c)
    raise AssertionError(f"{work['kind']}/{work['metadata']['name']}: no container {CONTAINER}")


def label_of(o: dict[str, Any]) -> str:
    return f"{o['kind']}/{o['metadata']['name']}"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector (or a Service's plain selector) picks these labels."""
    wanted = selector.get("matchLabels", selector)
    assert "matchExpressions" not in selector, "matchExpressions: extend this check"
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def container_port(c: dict[str, Any], port: int | str, protocol: str = "TCP") -> dict[str, Any]:
    """The container port a probe or a Service's targetPort names, by name or by number."""
    for p in c.get("ports", []):
        if p.get("protocol", "TCP") != protocol:
            continue
        if p.get("name") == port or p["containerPort"] == port:
            return dict(p)
    raise AssertionError(f"container {c['name']}: no {protocol} port {port!r}")


def quantity(text: str | int) -> float:
    """A Kubernetes quantity ("2Gi", "500m", "128M", "3") as a number."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    units["m"] = 1e-3
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert match and match.group(2) in ("", *units), f"unreadable quantity {text!r}"
    return float(match.group(1)) * units.get(match.group(2), 1)


def mounted_file(objects: list[dict[str, Any]], work: dict[str, Any], path: str) -> str | None:
    """The content of ``path`` inside the container when a ConfigMap volume provides it."""
    volumes = {v["name"]: v for v in pod_spec(work).get("volumes", [])}
    for mount in container(work).get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        volume = volumes.get(mount["name"], {})
        if not path.startswith(prefix) or "configMap" not in volume:
            continue
        relative = path[len(prefix) :]
        items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
        key = items.get(relative, relative) if items else relative
        data = only(objects, "ConfigMap", volume["configMap"]["name"]).get("data", {})
        return str(data[key]) if key in data else None
    return None


def effective_config(objects: list[dict[str, Any]], work: dict[str, Any]) -> config.Config:
    """The settings fastforward would run with in this workload's pods.

    Its command line and the literal values of its environment go through fastforward's own
    loader; the config file named with ``-c`` is read from the ConfigMap mounted there.
    Variables from a Secret or a field reference cannot be known here and are left out.
    """
    c = container(work)
    # Through the image's entrypoint, options of its own would be added: not modelled here.
    assert c.get("command", [""])[0] == "fastforward", f"{label_of(work)}: runs {c.get('command')}"
    argv = list(c["command"][1:]) + list(c.get("args", []))
    env = {e["name"]: str(e["value"]) for e in c.get("env", []) if "value" in e}
    with tempfile.TemporaryDirectory() as scratch:
        for i, arg in enumerate(argv):
            if arg in ("-c", "--config") and i + 1 < len(argv):
                content = mounted_file(objects, work, argv[i + 1])
                assert content is not None, f"{label_of(work)}: {argv[i + 1]} is not mounted"
                local = Path(scratch) / f"config-{i}.conf"
                local.write_text(content, encoding="utf-8")
                argv[i + 1] = str(local)
        return config.load(argv, env).config


def pre_stop_seconds(c: dict[str, Any]) -> float:
    """How long the preStop hook holds the container before SIGTERM."""
    hook = c.get("lifecycle", {}).get("preStop", {})
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = hook.get("exec", {}).get("command", [])
    if command[:1] == ["sleep"] and len(command) == 2:
        return float(command[1])
    assert not hook, f"preStop hook of unknown length: {hook}"
    return 0.0


# ---------------------------------------------------------------------------------------------
# the drain timeout and the grace period


def grace_period_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every workload whose grace period would cut its drain short, as a sentence each.

    The kubelet sends SIGKILL ``terminationGracePeriodSeconds`` after it starts stopping the
    pod, preStop hook included. fastforward needs its drain timeout after SIGTERM plus
    ``DRAIN_MARGIN`` (the supervisor's own allowance for the receivers, spool writes and exit).
    """
    problems = []
    for work in workloads(objects):
        c = container(work)
        env = c.get("env", [])
        if any(e["name"] == "FASTFORWARD_DRAIN_TIMEOUT" and "value" not in e for e in env):
            problems.append(f"{label_of(work)}: FASTFORWARD_DRAIN_TIMEOUT must be a literal")
            continue
        drain = effective_config(objects, work).drain_timeout
        grace = pod_spec(work).get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
        pre_stop = pre_stop_seconds(c)
        needed = pre_stop + drain + DRAIN_MARGIN
        if grace < needed:
            problems.append(
                f"{label_of(work)}: terminationGracePeriodSeconds {grace} is shorter than "
                f"preStop {pre_stop:g} s + drain timeout {drain:g} s + margin "
                f"{DRAIN_MARGIN:g} s = {needed:g} s"
            )
    return problems


def test_grace_period_outlasts_the_drain_timeout(objects):
    assert grace_period_problems(objects) == []


def _overlay(tmp_path: Path, patch: str) -> list[dict[str, Any]]:
    """The base rendered with one more strategic-merge patch on the StatefulSet."""
    (tmp_path / "patch.yaml").write_text(patch, encoding="utf-8")
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(KUSTOMIZE / 'base', tmp_path)}\n"
        "patches:\n  - path: patch.yaml\n",
        encoding="utf-8",
    )
    return render(tmp_path)


PATCH_HEAD = """apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: fastforward
spec:
  template:
    spec:
"""


@pytest.mark.parametrize(
    "patch, expected",
    [
        pytest.param(
            PATCH_HEAD + "      containers:\n        - name: fastforward\n          env:\n"
            "            - name: FASTFORWARD_DRAIN_TIMEOUT\n              value: '120'\n",
            "drain timeout 120 s",
            id="drain-timeout-raised",
        ),
        pytest.param(
            PATCH_HEAD + "      terminationGracePeriodSeconds: 40\n",
            "terminationGracePeriodSeconds 40",
            id="grace-period-shortened",
        ),
        pytest.param(
            PATCH_HEAD + "      containers:\n        - name: fastforward\n          lifecycle:\n"
            "            preStop:\n              sleep:\n                seconds: 30\n",
            "preStop 30 s",
            id="pre-stop-lengthened",
        ),
    ],
)
def test_grace_check_fails_when_the_manifests_disagree(tmp_path, patch, expected):
    """The check above can fail: a copy of the base patched out of step is caught."""
    problems = grace_period_problems(_overlay(tmp_path, patch))
    assert len(problems) == 1 and expected in problems[0], problems


def test_grace_check_reads_a_drain_timeout_set_in_the_config_file():
    """With the variable gone, the config file's drain_timeout counts (and is caught)."""
    objects = render(KUSTOMIZE)
    work = workload(objects)
    c = container(work)
    c["env"] = [e for e in c["env"] if e["name"] != "FASTFORWARD_DRAIN_TIMEOUT"]
    work["spec"]["template"]["spec"]["containers"] = [c]
    cm = only(objects, "ConfigMap")
    cm["data"]["fastforward.conf"] += "drain_timeout = 90\n"
    problems = grace_period_problems(objects)
    assert len(problems) == 1 and "drain timeout 90 s" in problems[0], problems


# ---------------------------------------------------------------------------------------------
# schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(objects, variant, version):
    custom = []
    for o in objects:
        if (o["apiVersion"], o["kind"]) in CUSTOM_KINDS:
            custom.append(o)
            continue
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{label_of(o)} against Kubernetes {version}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{label_of(o)}: {exc.message}")
    # The base and the stateless variant must apply on a cluster without any CRD.
    assert not custom or variant == "prometheus-operator", [label_of(o) for o in custom]


def _stateless_with_pod_monitor(tmp_path: Path) -> Path:
    """The component added to the stateless variant, as README tells users to do."""
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(VARIANTS['stateless'], tmp_path)}\n"
        "components:\n"
        f"  - {os.path.relpath(KUSTOMIZE / 'components' / 'podmonitor', tmp_path)}\n",
        encoding="utf-8",
    )
    return tmp_path


@pytest.mark.parametrize("kind", ["StatefulSet", "Deployment"])
def test_pod_monitor_scrapes_the_admin_port(tmp_path, kind):
    if kind == "StatefulSet":
        objects = render(VARIANTS["prometheus-operator"])
    else:
        objects = render(_stateless_with_pod_monitor(tmp_path))
    monitor = only(objects, "PodMonitor")
    work = workload(objects)
    assert work["kind"] == kind
    labels = work["spec"]["template"]["metadata"]["labels"]
    assert selects(monitor["spec"]["selector"], labels)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    admin = parse_endpoint(effective_config(objects, work).admin_endpoint)
    assert container_port(container(work), endpoint["port"])["containerPort"] == admin.port
    assert endpoint["path"] == "/metrics"
    # Scraped once: the annotations for annotation-driven discovery are gone.
    annotations = work["spec"]["template"]["metadata"].get("annotations") or {}
    assert not [a for a in annotations if a.startswith("prometheus.io/")]


# ---------------------------------------------------------------------------------------------
# what the pods run with


def test_probes_ask_the_admin_endpoint_the_config_opens(objects):
    work = workload(objects)
    c = container(work)
    admin = effective_config(objects, work).admin_endpoint
    assert admin, "no --admin-endpoint: nothing answers the probes"
    ep = parse_endpoint(admin)
    # The kubelet probes the pod's address, not its loopback.
    assert ep.host in ("", "0.0.0.0", "::"), f"admin endpoint bound to {ep.host}"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        port = c[probe]["httpGet"]["port"]
        assert container_port(c, port)["containerPort"] == ep.port, probe
    # Readiness follows /health: out of the Service while Blueflood or the spool cannot take
    # more. Liveness must not: restarting cannot fix Blueflood and would drop what is buffered.
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert c["livenessProbe"]["httpGet"]["path"] != "/health"
    annotations = work["spec"]["template"]["metadata"].get("annotations") or {}
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == ep.port


def test_services_reach_the_listeners_the_config_opens(objects):
    work = workload(objects)
    c = container(work)
    listeners = {
        (ep.port, "UDP" if ep.kind == "udp" else "TCP"): kind
        for ep, kind in effective_config(objects, work).listeners()
        if ep.kind != "unix"
    }
    service = only(objects, "Service", "fastforward")
    exposed = set()
    for port in service["spec"]["ports"]:
        protocol = port.get("protocol", "TCP")
        target = container_port(c, port.get("targetPort", port["port"]), protocol)
        key = (target["containerPort"], protocol)
        assert key in listeners, f"Service port {port['name']} leads to no listener: {key}"
        # Named after what listens there: pickle on the pickle listener, plaintext on lines.
        assert port["name"].split("-")[0] == SERVICE_PORT_NAMES[listeners[key]], port["name"]
        exposed.add(key)
    assert exposed == set(listeners), f"listeners no Service port reaches: {listeners}"
    for svc in (o for o in objects if o["kind"] == "Service"):
        assert selects(svc["spec"]["selector"], work["spec"]["template"]["metadata"]["labels"])


def test_spool_lives_on_the_volume_the_variant_promises(objects, variant):
    work = workload(objects)
    cfg = effective_config(objects, work)
    if variant == "stateless":
        assert work["kind"] == "Deployment"
        assert cfg.spool_dir == ""
        return
    assert work["kind"] == "StatefulSet"
    claims = {t["metadata"]["name"]: t for t in work["spec"]["volumeClaimTemplates"]}
    mounts = [
        m
        for m in container(work)["volumeMounts"]
        if cfg.spool_dir.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert cfg.spool_dir and len(mounts) == 1, f"spool {cfg.spool_dir!r} on no single volume"
    claim = claims[mounts[0]["name"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    size = quantity(claim["spec"]["resources"]["requests"]["storage"])
    # The cap must fit on the volume with room to spare (ext4 keeps 5% for root).
    assert cfg.spool_max_bytes <= 0.9 * size, (cfg.spool_max_bytes, size)
    # A scaled-away ordinal's claim may hold spooled bodies: it is kept.
    assert work["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    headless = only(objects, "Service", work["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_autoscaler_and_disruption_budget_cover_the_pods(objects):
    work = workload(objects)
    labels = work["spec"]["template"]["metadata"]["labels"]
    assert selects(work["spec"]["selector"], labels)
    hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": work["kind"],
        "name": work["metadata"]["name"],
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is relative to the request: without one the autoscaler does nothing.
    assert quantity(container(work)["resources"]["requests"]["cpu"]) > 0
    pdb = only(objects, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"], labels)
    # One pod may go at a time, and one is always left to accept.
    assert pdb["spec"]["maxUnavailable"] == 1
    assert hpa["spec"]["minReplicas"] >= 2
    for spread in pod_spec(work).get("topologySpreadConstraints", []):
        assert selects(spread["labelSelector"], labels)


def test_memory_limit_holds_the_buffers_the_config_allows(objects):
    """Sized from the benchmark figures and the config's own caps (README "Resources")."""
    work = workload(objects)
    cfg = effective_config(objects, work)
    resources = container(work)["resources"]
    stream_listeners = sum(1 for ep, _kind in cfg.listeners() if ep.stream)
    worst = (
        SUSTAINED_RSS_BYTES
        + cfg.max_buffer_bytes
        + cfg.body_bytes
        + stream_listeners * cfg.max_connections * READ_BUFFER
    )
    assert quantity(resources["limits"]["memory"]) >= worst
    assert quantity(resources["requests"]["memory"]) >= BURST_PEAK_RSS_BYTES


def test_credentials_come_only_from_a_secret(objects):
    # No Secret with values in the repository's manifests; the pods read one made apart.
    assert not [o for o in objects if o["kind"] == "Secret"]
    for work in workloads(objects):
        c = container(work)
        literal = [e["name"] for e in c.get("env", []) if e["name"] in SECRET_VARIABLES]
        assert not literal, f"credentials inlined in the environment: {literal}"
        argv = c.get("command", []) + c.get("args", [])
        assert not {"-k", "--key", "--password"} & set(argv), "credentials on the command line"
        refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
        assert refs == ["fastforward-credentials"]
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        for name, text in cm.get("data", {}).items():
            ini = configparser.RawConfigParser()
            ini.read_string(text, source=name)
            for section in ini.sections():
                keys = {k.replace("-", "_") for k in ini[section]}
                assert not keys & SECRET_INI_KEYS, f"credentials in ConfigMap {name}"


def _security_contexts(work: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = pod_spec(work)
    for c in spec.get("initContainers", []) + spec["containers"]:
        yield c["name"], {**spec.get("securityContext", {}), **c.get("securityContext", {})}


def test_containers_run_unprivileged_on_a_read_only_root(objects):
    for work in workloads(objects):
        spec = pod_spec(work)
        for name, ctx in _security_contexts(work):
            assert ctx.get("runAsNonRoot") is True, name
            assert ctx.get("runAsUser", 0) != 0, name
            assert ctx.get("readOnlyRootFilesystem") is True, name
            assert ctx.get("allowPrivilegeEscalation") is False, name
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], name
            assert ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False
        # Service links would set FASTFORWARD_* variables, which fastforward reads as options.
        assert spec.get("enableServiceLinks") is False
        assert container(work)["image"].startswith("blueflood-fastforward")
