"""deploy/: what can be checked without running it. Every file parses; every `SILOFLOW_*`
variable it sets is a real setting; every service has its health checks; the systemd units pass
`systemd-analyze verify`; every Kubernetes resource validates against the Kubernetes API schema
(strictly: an unknown field fails) and the manifests build with kustomize.

`.ci/run` installs the tools these need where Debian has them (`deploy/local/ensure-tools.sh`)
and sets SILOFLOW_REQUIRE_TOOLS=1, so there a missing tool fails the test instead of skipping it.
kubectl is in neither Debian's nor PyPI's packages: the kustomize build runs only where it is
installed, and says so when it is not; the schema validation runs everywhere."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

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
        "compose/.env.example",
        "systemd/siloflow.env.example",
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
    assert len(built) == 14


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
