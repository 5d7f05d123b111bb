"""deploy/kuberay/raycluster.yaml, parsed and held to what KubeRay's RayCluster (ray.io/v1) requires: the fields its
API types mark required (headGroupSpec with rayStartParams and a pod template; each worker group's groupName,
minReplicas, maxReplicas, rayStartParams, template) and a pod template's own (containers with a name and an image).
The head's `mistralpy serve` line is parsed by mistralpy's own CLI. No cluster runs here (no Kubernetes API server,
no container runtime, no registry reachable): docs/DEPLOYMENT.md says so."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from mistralpy.cli import build_parser
from mistralpy.distributed.cli import check_replica_flags, replica_counts

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "kuberay" / "raycluster.yaml"


def _containers(group: dict) -> list[dict]:
    assert isinstance(group["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # map[string]string
    containers = group["template"]["spec"]["containers"]
    assert containers and all(c["name"] and c["image"] for c in containers)
    for c in containers:  # with overwrite-container-cmd, a container that does not start Ray is no Ray node
        assert "$KUBERAY_GEN_RAY_START_CMD" in " ".join(c["args"]) and c["command"][:2] == ["/bin/bash", "-lc"]
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    return containers


def test_manifest_has_what_a_raycluster_needs():
    doc = yaml.safe_load(MANIFEST.read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster" and doc["metadata"]["name"]
    assert doc["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    head = _containers(doc["spec"]["headGroupSpec"])[0]
    workers = doc["spec"]["workerGroupSpecs"]
    assert workers
    for group in workers:
        assert group["groupName"] and 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        _containers(group)

    command = head["args"][0].split("exec ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["mistralpy", "serve"]
    args = build_parser().parse_args(argv[1:])
    check_replica_flags(args)
    assert replica_counts(args) == {"num_replicas": 4} and args.ray_address == "auto"
    assert {p["containerPort"] for p in head["ports"]} >= {6379, args.port}


def test_guide_shows_the_manifest_as_it_is():
    guide = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    assert MANIFEST.read_text().split("\n", 2)[2] in guide  # past its two comment lines
