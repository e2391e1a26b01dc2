"""deploy/: what can be checked without running it. Every file parses; every `SILOFLOW_*`
variable it sets is a real setting; every service has its health checks; the systemd units pass
`systemd-analyze verify`; every Kubernetes resource validates against the Kubernetes API schema
(strictly: an unknown field fails) and the manifests build with kustomize.

`.ci/run` installs the tools these need where Debian has them (`deploy/local/ensure-tools.sh`)
and sets SILOFLOW_REQUIRE_TOOLS=1, so there a missing tool fails the test instead of skipping it.
kubectl is in neither Debian's nor PyPI's packages: the kustomize build runs only where it is
installed, and says so when it is not; the schema validation runs everywhere."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import grimp
import kubernetes_validate
import pytest
import yaml

from services.core.settings import ENV_PREFIX, Settings
from tests.support import needs

DEPLOY = Path(__file__).parents[2] / "deploy"
SETTINGS = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}
SERVICES = ("ingest", "router", "workers", "sweeper")
# The Kubernetes release the manifests are checked against: the oldest still maintained upstream
# when they were written (PodDisruptionBudget policy/v1, Job ttlSecondsAfterFinished, ...).
KUBERNETES = "1.28.0"
# Resources of operators' custom kinds: their schema ships with the operator, not with Kubernetes.
CUSTOM_KINDS = {"RabbitmqCluster", "Kustomization"}


def documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def env_names(text: str) -> set[str]:
    return set(re.findall(r"\b(SILOFLOW_[A-Z0-9_]+)\b", text))


def test_every_yaml_file_parses() -> None:
    files = [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]
    assert len(files) >= 10
    for path in files:
        assert documents(path), path


@pytest.mark.parametrize(
    "path",
    [
        "compose/siloflow.env",
        "systemd/env/siloflow.env.example",
        "kubernetes/config.yaml",
        "container/Dockerfile",
    ],
)
def test_every_siloflow_variable_is_a_setting(path: str) -> None:
    used = env_names((DEPLOY / path).read_text())
    assert used, f"{path} sets no SILOFLOW_* variable"
    assert used <= SETTINGS, f"{path}: not settings: {sorted(used - SETTINGS)}"


def test_compose_services_have_health_checks_and_order() -> None:
    compose = documents(DEPLOY / "compose" / "compose.yaml")[0]
    services = compose["services"]
    for name in ("rabbitmq", "postgres", "openbao"):
        assert services[name]["healthcheck"]["test"], name
    anchor = compose["x-siloflow"]
    assert "readyz" in " ".join(anchor["healthcheck"]["test"])
    assert anchor["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in SERVICES:
        assert services[name]["command"][:2] == ["run", name]
        assert services[name]["healthcheck"] == anchor["healthcheck"]
    migrate = services["migrate"]
    assert all(c["condition"] == "service_healthy" for c in migrate["depends_on"].values())
    conf = (DEPLOY / "rabbitmq" / "rabbitmq.conf").resolve()
    assert any(v.startswith("../rabbitmq/rabbitmq.conf:") for v in services["rabbitmq"]["volumes"])
    assert conf.exists()


def test_kubernetes_deployments_probe_health_and_scale_out() -> None:
    kinds: dict[str, list[dict[str, Any]]] = {}
    listed = set(documents(DEPLOY / "kubernetes" / "kustomization.yaml")[0]["resources"])
    files = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files, "kustomization.yaml must list every manifest"
    for name in files:
        for doc in documents(DEPLOY / "kubernetes" / name):
            kinds.setdefault(doc["kind"], []).append(doc)
    cluster = kinds["RabbitmqCluster"][0]
    assert cluster["spec"]["replicas"] == 3
    deployments = {d["metadata"]["name"]: d for d in kinds["Deployment"]}
    assert set(deployments) == {f"siloflow-{s}" for s in SERVICES}
    for name, deployment in deployments.items():
        assert deployment["spec"]["replicas"] >= 2, f"{name} must run more than one replica"
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        port = container["ports"][0]
        assert (
            port["containerPort"] == 9464
            and container["livenessProbe"]["httpGet"]["port"] == port["name"]
        )
    assert {p["metadata"]["name"] for p in kinds["PodDisruptionBudget"]} == set(deployments)
    config = next(c for c in kinds["ConfigMap"] if c["metadata"]["name"] == "siloflow-config")
    assert config["data"]["SILOFLOW_METRICS_PORT"] == "9464"


@pytest.mark.parametrize(
    "manifest", sorted((DEPLOY / "kubernetes").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_kubernetes_resource_validates_against_the_api_schema(manifest: Path) -> None:
    validated = 0
    for resource in documents(manifest):
        if resource["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(resource, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{manifest.name}: {resource['kind']} {exc.path}: {exc.message}")
        validated += 1
    assert validated or all(r["kind"] in CUSTOM_KINDS for r in documents(manifest))


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    deployment = documents(DEPLOY / "kubernetes" / "router.yaml")[0]
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_kustomize_builds_the_manifests() -> None:
    needs(
        "kubectl",
        "the kustomize build of deploy/kubernetes (Debian and PyPI have no kubectl)",
        ci_installs=False,
    )
    result = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "kubernetes")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(built) == 16


def test_systemd_units_verify(tmp_path: Path) -> None:
    needs("systemd-analyze", "`systemd-analyze verify` of deploy/systemd")
    for unit in (DEPLOY / "systemd").glob("siloflow*"):
        if unit.suffix in {".service", ".target"}:
            text = unit.read_text().replace("/opt/siloflow/venv/bin/siloflow", "/bin/true")
            (tmp_path / unit.name).write_text(text)
    (tmp_path / "siloflow@ingest.service").write_text((tmp_path / "siloflow@.service").read_text())
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "siloflow@ingest.service"),
            str(tmp_path / "siloflow-migrate.service"),
            str(tmp_path / "siloflow.target"),
        ],
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# -- each deployed process gets only its own secrets -----------------------------------------------

# Settings that hold a secret, and what code reading each says (`settings.<this>`). A new secret
# setting fails `test_every_secret_setting_says_who_reads_it` until it has a row here.
READER = {
    "SILOFLOW_REGISTRY_DSN": "registry_url",
    "SILOFLOW_HOST_KEY_SECRETS": "host_key_secrets",
    "SILOFLOW_OPENBAO_ROLE_ID": "openbao_role_id",
    "SILOFLOW_OPENBAO_SECRET_ID": "openbao_secret_id",
    "SILOFLOW_OPENBAO_TOKEN": "openbao_token",
    "SILOFLOW_PROVISIONER_PASSWORD": "provisioner_url",
    "SILOFLOW_PROVISIONER_DSN": "provisioner_url",
    "SILOFLOW_BROKER_PASSWORDS": "broker_passwords",
}
# The tenant-login issuers: a deployment uses one (SILOFLOW_CREDENTIALS); the other's reads do
# not count.
ISSUERS = {
    "builtin": "services.core.silo.credentials.builtin",
    "openbao": "services.core.silo.credentials.openbao",
}
# What each deployed process runs: its package (or module) in the code.
COMPONENTS = {
    "ingest": "services.ingest",
    "router": "services.router",
    "workers": "services.workers",
    "sweeper": "services.sweeper",
    "migrate": "services.ops.migrate",
}
ROOT = Path(__file__).parents[2]


# AppRole's role id is half of a login, though not typed as a secret (it is not shown hidden).
UNTYPED_SECRETS = {"openbao_role_id"}


def secret_settings() -> set[str]:
    """Every setting whose value is a secret: SecretStr fields, DSNs (they carry a password) and
    the untyped ones above."""
    found = set()
    for name, info in Settings.model_fields.items():
        if "SecretStr" in str(info.annotation) or name.endswith("_dsn") or name in UNTYPED_SECRETS:
            found.add(f"{ENV_PREFIX}{name}".upper())
    return found


def source_of(module: str) -> str:
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    return path.read_text()


@functools.cache
def readers(attribute: str) -> frozenset[str]:
    """The modules whose code reads `settings.<attribute>` (or calls it: `provisioner_url(...)`)."""
    graph = _graph()
    pattern = re.compile(rf"(?<!def )\b{attribute}\b")
    return frozenset(
        m for m in graph.modules if m != "services.core.settings" and pattern.search(source_of(m))
    )


def test_every_secret_setting_says_who_reads_it() -> None:
    assert set(READER) == secret_settings()
    for setting, attribute in READER.items():
        assert readers(attribute), f"nothing reads {setting}"


@functools.cache
def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("services", "schemas")


@functools.cache
def reachable(component: str) -> frozenset[str]:
    """The modules a component's code imports, itself included (import-linter's graph)."""
    graph = _graph()
    own = {m for m in graph.modules if m == component or m.startswith(component + ".")}
    found = set(own)
    for module in own:
        found |= graph.find_upstream_modules(module)
    return frozenset(found)


def roles_of(component: str) -> set[str]:
    """The broker roles a component connects as: each `BrokerRole.X` its own code names (its
    package's modules; for an operator command, the operator modules it imports)."""
    own = "services.ops" if component.startswith("services.ops.") else component
    roles = set()
    for module in reachable(component):
        if module != own and not module.startswith(own + "."):
            continue
        roles |= {r.lower() for r in re.findall(r"BrokerRole\.([A-Z]+)", source_of(module))}
    return roles


def reads(component: str, setting: str, credentials: str) -> bool:
    """Whether the component's code reads the setting, with tenant logins from `credentials`."""
    unused = {m for name, m in ISSUERS.items() if name != credentials}
    return bool((readers(READER[setting]) - unused) & reachable(COMPONENTS[component]))


def check_received(component: str, received: dict[str, str], credentials: str) -> None:
    """Nothing received that the component's code does not read; its own broker role only."""
    for setting in set(received) & secret_settings():
        assert reads(component, setting, credentials), f"{component} gets {setting}, unread"
    if "SILOFLOW_BROKER_PASSWORDS" in received:
        given = {item.split(":", 1)[0] for item in received["SILOFLOW_BROKER_PASSWORDS"].split(",")}
        if component != "migrate":  # bootstrap, in the same one-shot, creates every user
            assert given == roles_of(COMPONENTS[component]), (component, given)
    for url in ("SILOFLOW_AMQP_URL", "SILOFLOW_MANAGEMENT_URL"):
        if component != "migrate" and url in received:
            assert "@" not in received[url], f"{component}: {url} carries credentials"


def test_the_code_reads_what_the_checks_assume() -> None:
    # The facts the deploy checks rest on, from the code: if one changes, so must deploy/.
    assert reads("router", "SILOFLOW_HOST_KEY_SECRETS", "openbao")
    assert reads("ingest", "SILOFLOW_HOST_KEY_SECRETS", "openbao")
    assert not reads("workers", "SILOFLOW_HOST_KEY_SECRETS", "openbao")
    assert not reads("sweeper", "SILOFLOW_HOST_KEY_SECRETS", "openbao")
    assert not reads("router", "SILOFLOW_OPENBAO_SECRET_ID", "openbao")
    assert roles_of("services.router") == {"router"}
    assert roles_of("services.workers") == {"workers"}
    assert roles_of("services.ingest") == {"ingest"}
    assert roles_of("services.sweeper") == set()


def env_file(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def test_compose_gives_each_service_only_its_own_secrets() -> None:
    compose = documents(DEPLOY / "compose" / "compose.yaml")[0]
    shared = env_file(DEPLOY / "compose" / "siloflow.env")
    assert not set(shared) & secret_settings(), "siloflow.env goes to every container"
    for name, service in compose["services"].items():
        assert service.get("env_file") in (None, "siloflow.env"), f"{name} gets another file"
    for name in (*SERVICES, "migrate"):
        service = compose["services"][name]
        received = {**shared, **{k: str(v) for k, v in service.get("environment", {}).items()}}
        check_received(name, received, shared["SILOFLOW_CREDENTIALS"])
    assert "SILOFLOW_HOST_KEY_SECRETS" in compose["services"]["router"]["environment"]
    assert "SILOFLOW_HOST_KEY_SECRETS" not in compose["services"]["workers"]["environment"]


def test_kubernetes_gives_each_component_only_its_own_secrets() -> None:
    resources = [d for path in (DEPLOY / "kubernetes").glob("*.yaml") for d in documents(path)]
    secrets = {
        d["metadata"]["name"]: d.get("stringData", {}) for d in resources if d["kind"] == "Secret"
    }
    config = next(d["data"] for d in resources if d["kind"] == "ConfigMap")
    assert not set(config) & secret_settings(), "the ConfigMap is no place for a secret"
    workloads = [d for d in resources if d["kind"] in ("Deployment", "Job")]
    assert len(workloads) == 5
    for workload in workloads:
        [container] = workload["spec"]["template"]["spec"]["containers"]
        component = workload["metadata"]["name"].removeprefix("siloflow-")
        received = dict(config)
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                received |= secrets[source["secretRef"]["name"]]
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                received[variable["name"]] = secrets[ref["name"]][ref["key"]]
        check_received(component, received, config["SILOFLOW_CREDENTIALS"])


def test_systemd_gives_each_unit_only_its_own_secrets() -> None:
    unit = (DEPLOY / "systemd" / "siloflow@.service").read_text()
    assert "EnvironmentFile=/etc/siloflow/%i.env" in unit
    shared = env_file(DEPLOY / "systemd" / "env" / "siloflow.env.example")
    assert not set(shared) & secret_settings(), "siloflow.env is read by every unit"
    for component in COMPONENTS:
        own = env_file(DEPLOY / "systemd" / "env" / f"{component}.env.example")
        check_received(component, {**shared, **own}, shared["SILOFLOW_CREDENTIALS"])
