"""A driver process for the cluster tests, as a notebook or script would be:

    python -m tests.cluster_driver ADDRESS LAKE [--wait] [--resources '{"ctl": 0.01}']
        [--pipeline IO] [--autoscaling]

attaches to the cluster, starts a backfill of tests.pipelines:PIPELINE (or another), prints its run id, and
(with --wait) waits for it and prints the result as JSON."""

from __future__ import annotations

import argparse
import json

import lakeflow as lf
from tests import pipelines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("lake")
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--resources", help="custom resources placing the controller (JSON)")
    parser.add_argument("--pipeline", default="PIPELINE", help="a pipeline of tests.pipelines")
    parser.add_argument("--autoscaling", action="store_true", help="units wait for nodes")
    args = parser.parse_args()
    lf.connect(args.address, log_to_driver=False)
    options = lf.ControllerOptions(
        resources=json.loads(args.resources) if args.resources else None,
        autoscaling=args.autoscaling,
    )
    pipeline = getattr(pipelines, args.pipeline)
    run = lf.backfill(pipeline, lake=args.lake, wait=False, options=options)
    import ray

    from lakeflow.control.client import NAMESPACE, controller_name

    actor = ray.get_actor(controller_name(lf.Lake(args.lake)), namespace=NAMESPACE)
    pid = ray.get(actor.ping.remote())["pid"]
    print(json.dumps({"run_id": run.id, "controller_pid": pid}), flush=True)
    if args.wait:
        result = run.wait()
        print(json.dumps({"ok": result.ok, "counts": result.counts()}), flush=True)


if __name__ == "__main__":
    main()
