"""The cluster configurations in cluster/ are well formed and install and start lakeflow the way
the project needs (checked offline: no cloud, no Kubernetes)."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from tests.conftest import ROOT

CLUSTER = ROOT / "cluster"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def ray_pin() -> str:
    """The Ray version the project pins (its lower bound), e.g. '2.60'."""
    dep = next(d for d in PROJECT["dependencies"] if d.startswith("ray"))
    return re.search(r">=([0-9]+\.[0-9]+)", dep).group(1)


def load(name: str) -> list[dict]:
    return list(yaml.safe_load_all((CLUSTER / name).read_text()))


def test_the_launcher_config_installs_and_starts_lakeflow():
    (config,) = load("aws.yaml")
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert key in config, f"aws.yaml lacks {key}"
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0, "controller": 1}
    for name, node in types.items():
        if name != config["head_node_type"]:
            assert node["min_workers"] <= node["max_workers"] <= config["max_workers"]
    assert any("pip install" in c and "lakeflow" in c for c in config["setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        assert "RAY_AUTH_MODE=token" in start and "ray start" in start, key
    assert "--head" in " ".join(config["head_start_ray_commands"])


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec["template"]["spec"]["containers"]


def check_ray_cluster_spec(spec: dict, where: str) -> None:
    assert spec["rayVersion"].startswith(ray_pin()), (
        f"{where}: Ray {spec['rayVersion']} is not the pinned {ray_pin()}"
    )
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", f"{where}: the head should run no units"
    assert "controller" in head["rayStartParams"]["resources"], where
    groups = [head, *spec["workerGroupSpecs"]]
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
    for group in groups:
        for container in containers(group):
            assert container["image"].startswith("lakeflow/lakeflow:"), (
                f"{where}: {container['image']}"
            )
            assert {"secretRef": {"name": "lakeflow-s3"}} in container["envFrom"], where
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", where
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-auth-token"
            assert env["LAKEFLOW_LAKE"]["value"].startswith("s3://"), where


def test_the_raycluster_manifest():
    (cluster,) = load("kuberay/raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    check_ray_cluster_spec(cluster["spec"], "raycluster.yaml")


def test_the_rayjob_runs_a_backfill_of_a_pipeline_the_image_holds():
    (job,) = load("kuberay/rayjob-backfill.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    entry = job["spec"]["entrypoint"].split()
    assert entry[:2] == ["lakeflow", "backfill"] and "--address" in entry
    assert entry[entry.index("--address") + 1] == "auto"
    pipeline = entry[2]
    assert pipeline.startswith("/home/ray/lakeflow/"), "the image keeps the project there"
    assert (ROOT / pipeline.removeprefix("/home/ray/lakeflow/")).exists(), pipeline
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    check_ray_cluster_spec(job["spec"]["rayClusterSpec"], "rayjob-backfill.yaml")


def test_the_image_installs_the_project_on_the_pinned_ray():
    dockerfile = (CLUSTER / "kuberay" / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:([0-9.]+)-py3(\d+)", dockerfile, re.M)
    assert base, "the image must build on rayproject/ray"
    assert base.group(1).startswith(ray_pin())
    python = f"3.{base.group(2)}"
    floor = re.search(r">=\s*3\.(\d+)", PROJECT["requires-python"]).group(1)
    assert int(base.group(2)) >= int(floor), f"Python {python} is below requires-python"
    assert "WORKDIR /home/ray/lakeflow" in dockerfile and "pip install" in dockerfile
    assert "COPY --chown=ray:users pipelines ./pipelines" in dockerfile


@pytest.mark.parametrize(
    "name",
    [
        "aws.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob-backfill.yaml",
        "kuberay/secret-example.yaml",
    ],
)
def test_no_real_secret_is_committed(name):
    text = (CLUSTER / name).read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    for doc in load(name):
        if doc and doc.get("kind") == "Secret":
            assert all("REPLACE-ME" in v or v == "us-east-1" for v in doc["stringData"].values())
