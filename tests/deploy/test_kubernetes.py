"""deploy/kubernetes/*.yaml: valid against the Kubernetes API schemas (kubernetes-validate, strict: an
unknown or misspelt field fails), for the oldest release we support and the newest the validator knows,
and consistent with each other and with the app (probes on the app's routes, the grace period longer
than the app's drain, the models read-only, selectors that select the pods, one GPU per pod).
"""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
#: Oldest Kubernetes the manifests target (autoscaling/v2, policy/v1 and startupProbe are all GA there).
OLDEST = "1.30.0"
VERSIONS = sorted({OLDEST, kubernetes_validate.latest_version()})


def _resources() -> dict[str, dict]:
    """kind -> the (single) resource of that kind across the manifests."""
    found: dict[str, dict] = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc["kind"] not in found, f"two {doc['kind']} resources"
                found[doc["kind"]] = doc
    return found


RESOURCES = _resources()


def test_the_expected_resources_are_there() -> None:
    assert set(RESOURCES) == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
                              "HorizontalPodAutoscaler", "PodDisruptionBudget"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schema(path: Path, version: str) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError


def test_the_validator_rejects_a_misspelt_field() -> None:
    """The check above can fail: a typo in a probe's name is an error under strict validation."""
    broken = copy.deepcopy(RESOURCES["Deployment"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, OLDEST, strict=True)


def _pod() -> dict:
    return RESOURCES["Deployment"]["spec"]["template"]


def _container() -> dict:
    (container,) = _pod()["spec"]["containers"]
    return container


def test_probes_use_the_apps_routes_and_port() -> None:
    container = _container()
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names == {"http": 8000}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # model loading takes a while


def test_grace_period_outlasts_the_drain() -> None:
    config = RESOURCES["ConfigMap"]["data"]
    drain = int(config["AEC_SHUTDOWN_TIMEOUT_S"])
    pre_stop = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = _pod()["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(pre_stop[1]) + drain + 5, "Kubernetes would SIGKILL requests still draining"


def test_one_gpu_per_pod_and_resource_requests() -> None:
    resources = _container()["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"].get("nvidia.com/gpu", 1) == resources["limits"]["nvidia.com/gpu"]
    assert {"cpu", "memory"} <= set(resources["requests"])


def test_models_are_mounted_read_only_from_the_shared_claim() -> None:
    container, spec = _container(), _pod()["spec"]
    config = RESOURCES["ConfigMap"]["data"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == config["AEC_MODELS_DIR"]]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == RESOURCES["PersistentVolumeClaim"]["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    assert "ReadWriteMany" in RESOURCES["PersistentVolumeClaim"]["spec"]["accessModes"]  # many nodes share it


def test_runs_as_the_images_user_without_privileges() -> None:
    spec = _pod()["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    security = _container()["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in _container()["volumeMounts"])  # the one writable place


def test_configuration_comes_from_the_environment() -> None:
    container = _container()
    assert container["envFrom"] == [{"configMapRef": {"name": RESOURCES["ConfigMap"]["metadata"]["name"]}}]
    assert all(key.startswith("AEC_") for key in RESOURCES["ConfigMap"]["data"])
    keys = [e for e in container["env"] if e["name"] == "AEC_API_KEYS"]
    assert keys and keys[0]["valueFrom"]["secretKeyRef"]["optional"] is True  # keys from a Secret, never inline


def test_selectors_select_the_pods_and_targets_exist() -> None:
    labels = _pod()["metadata"]["labels"]
    deployment = RESOURCES["Deployment"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], RESOURCES["Service"]["spec"]["selector"],
                     RESOURCES["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    target = RESOURCES["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert RESOURCES["Service"]["spec"]["ports"][0]["targetPort"] == "http"


def test_rollouts_and_disruptions_keep_capacity() -> None:
    deployment = RESOURCES["Deployment"]["spec"]
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0  # new pod ready before an old one goes
    hpa = RESOURCES["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] >= 2
    pdb = RESOURCES["PodDisruptionBudget"]["spec"]
    assert pdb.get("maxUnavailable", 0) < hpa["minReplicas"] or pdb.get("minAvailable", 0) >= 1
