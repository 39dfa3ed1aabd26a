"""The cluster configurations in cluster/ parse, agree with pyproject.toml and with each other,
and install and start lakeflow the way the project needs. Offline: no cloud, Kubernetes or Ray."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RAY = next(Requirement(d) for d in PROJECT["dependencies"] if Requirement(d).name == "ray")
IMAGE = f"lakeflow/lakeflow:{PROJECT['version']}"
YAMLS = ["aws.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob-backfill.yaml"]
YAMLS += ["kuberay/secret-example.yaml"]


def load(name: str) -> list[dict]:
    return list(yaml.safe_load_all((CLUSTER / name).read_text()))


def python_ok(version: str) -> bool:
    return SpecifierSet(PROJECT["requires-python"]).contains(version)


def check_token_env(env: list[dict], where: str) -> None:
    by_name = {e["name"]: e for e in env}
    assert by_name.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{where}: RAY_AUTH_MODE"
    ref = by_name.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
    assert ref == {"name": "ray-auth-token", "key": "token"}, f"{where}: RAY_AUTH_TOKEN {ref}"


@pytest.mark.parametrize("name", YAMLS)
def test_each_config_parses_and_commits_no_secret(name):
    docs = load(name)
    assert docs and all(isinstance(d, dict) for d in docs), f"{name}: not YAML mappings"
    assert not re.search(r"AKIA[0-9A-Z]{16}", (CLUSTER / name).read_text()), f"{name}: a key"
    for doc in docs:
        for key, value in doc.get("stringData", {}).items():
            assert "REPLACE-ME" in value or key == "AWS_REGION", f"{name}: {key} is no placeholder"


def test_the_launcher_config_installs_and_starts_lakeflow():
    (config,) = load("aws.yaml")
    for key in ("cluster_name", "max_workers", "provider", "auth", "available_node_types"):
        assert key in config, f"aws.yaml lacks {key}"
    assert config["provider"]["type"] == "aws" and config["provider"].get("region")
    types, head = config["available_node_types"], config.get("head_node_type")
    assert head in types, f"head_node_type {head!r} is not among {list(types)}"
    assert types[head]["resources"] == {"CPU": 0, "controller": 1}, "head: no units, controller"
    for name, node in types.items():
        if name != head:
            assert node["min_workers"] <= node["max_workers"] <= config["max_workers"], (
                f"{name}: min <= max <= cluster max"
            )
    setup = config["setup_commands"]
    assert any(re.search(r"pip install .*-e ~/lakeflow", c) for c in setup), "no lakeflow install"
    assert config["file_mounts"].get("~/lakeflow") == ".", "the project is not copied"
    assert "~/.ray/auth_token" in config["file_mounts"], "the nodes get no shared Ray token"
    python = re.search(r"--python (3\.\d+)", " ".join(setup))
    assert python and python_ok(python.group(1)), "setup's --python misses requires-python"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = config[key]
        assert "ray stop" in commands[0], f"{key}: does not stop Ray first"
        start = next((c for c in commands if "ray start" in c), "")
        assert "export RAY_AUTH_MODE=token" in start, f"{key}: RAY_AUTH_MODE not set for ray start"
        assert "AWS_REGION=" in start and "LAKEFLOW_LAKE=s3://" in start, f"{key}: lake env"
    head_start = " ".join(config["head_start_ray_commands"])
    for flag in ("--head", "--num-cpus=0", "controller", "--dashboard-host=127.0.0.1"):
        assert flag in head_start, f"head start lacks {flag}"
    assert "RAY_task_events_max_num_task_in_gcs=5000" in head_start
    if any(n.get("max_workers", 0) > n.get("min_workers", 0) for n in types.values()):
        assert "LAKEFLOW_AUTOSCALING=1" in head_start, "units would fail instead of waiting"


def check_ray_cluster_spec(spec: dict, where: str) -> None:
    assert RAY.specifier.contains(spec["rayVersion"]), f"{where}: Ray {spec['rayVersion']}"
    head = spec["headGroupSpec"]
    params = head["rayStartParams"]
    assert params.get("num-cpus") == "0", f"{where}: the head should run no units"
    assert json.loads(json.loads(params["resources"])) == {"controller": 1}, where
    assert spec["workerGroupSpecs"], f"{where}: no worker group"
    for group in spec["workerGroupSpecs"]:
        counts = [group.get(k) for k in ("minReplicas", "replicas", "maxReplicas")]
        assert None not in counts and counts == sorted(counts), f"{where}: replicas {counts}"
    for group in [head, *spec["workerGroupSpecs"]]:
        name = group.get("groupName", "head")
        for container in group["template"]["spec"]["containers"]:
            at = f"{where}: {name}/{container['name']}"
            assert container["image"] == IMAGE, f"{at}: image {container['image']}, not {IMAGE}"
            assert {"secretRef": {"name": "lakeflow-s3"}} in container.get("envFrom", []), at
            check_token_env(container["env"], at)
            lake = next(
                (e.get("value", "") for e in container["env"] if e["name"] == "LAKEFLOW_LAKE"), ""
            )
            assert lake.startswith("s3://"), f"{at}: LAKEFLOW_LAKE {lake!r}"
    head_env = {e["name"] for e in head["template"]["spec"]["containers"][0]["env"]}
    assert "RAY_task_events_max_num_task_in_gcs" in head_env, f"{where}: GCS task events unbounded"


def test_the_raycluster_manifest():
    (cluster,) = load("kuberay/raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    check_ray_cluster_spec(cluster["spec"], "raycluster.yaml")
    if cluster["spec"].get("enableInTreeAutoscaling"):
        autoscaler = cluster["spec"].get("autoscalerOptions", {}).get("env", [])
        check_token_env(autoscaler, "raycluster.yaml autoscaler")
        head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert {"name": "LAKEFLOW_AUTOSCALING", "value": "1"} in head["env"], "units would fail"


def test_the_rayjob_runs_a_backfill_of_a_pipeline_the_image_holds():
    (job,) = load("kuberay/rayjob-backfill.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    entry = " ".join(spec["entrypoint"].split())
    assert entry.startswith("lakeflow backfill "), entry
    assert "--address auto" in entry, f"{entry}: not run on the job's own cluster"
    pipeline = entry.split()[2]
    workdir = re.search(r"^WORKDIR (\S+)", (CLUSTER / "kuberay/Dockerfile").read_text(), re.M)
    assert workdir and pipeline.startswith(workdir.group(1) + "/"), f"{pipeline} not in image"
    assert (ROOT / pipeline.removeprefix(workdir.group(1) + "/")).is_file(), pipeline
    assert spec.get("submissionMode") == "K8sJobMode"
    assert spec.get("shutdownAfterJobFinishes") is True
    assert isinstance(spec.get("ttlSecondsAfterFinished"), int), "the finished job lingers"
    check_token_env(spec["submitterPodTemplate"]["spec"]["containers"][0]["env"], "submitter")
    check_ray_cluster_spec(spec["rayClusterSpec"], "rayjob-backfill.yaml")


def test_the_image_installs_the_project_on_the_pinned_ray_and_python():
    dockerfile = (CLUSTER / "kuberay" / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)\s*$", dockerfile, re.M)
    assert base, "the image must build FROM rayproject/ray:<version>-py3<minor>"
    assert RAY.specifier.contains(base.group(1)), f"Ray {base.group(1)} is not {RAY}"
    assert python_ok(f"3.{base.group(2)}"), f"Python 3.{base.group(2)} vs requires-python"
    assert re.search(r"^RUN pip install (--\S+ )*\.(\s|$)", dockerfile, re.M), "no pip install ."
    for path in ("pyproject.toml", "lakeflow", "pipelines"):
        assert re.search(rf"^COPY .*\b{path}\b", dockerfile, re.M), f"the image lacks {path}"
    assert f"-t {IMAGE} " in dockerfile, f"the build command does not tag {IMAGE}"


def test_the_example_secrets_hold_every_key_the_manifests_read():
    secrets = {d["metadata"]["name"]: d["stringData"] for d in load("kuberay/secret-example.yaml")}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        assert key in secrets.get("lakeflow-s3", {}), f"lakeflow-s3 lacks {key}"
    assert "token" in secrets.get("ray-auth-token", {}), "ray-auth-token lacks token"
