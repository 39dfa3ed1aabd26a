"""Ray Jobs: run a `lakeflow` command on a cluster as a job, and look after the jobs.

    lakeflow submit --address http://127.0.0.1:8265 -- backfill pipelines/flights.py --partitions 2013-01-01..2013-12-31
    lakeflow jobs list | logs ID [--follow] | stop ID

The job's driver runs the same CLI on the cluster's head, inside the project uploaded as its
working_dir, and attaches to that cluster; the controller it creates is detached, so stopping
the submitting process (Ctrl-C, a lost laptop) leaves the job and its runs going.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lakeflow.errors import LakeflowError, RayUnavailable, RequestError

__all__ = ["DEFAULT_ADDRESS", "follow_job", "job_client", "submit_job"]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
PASSED_ENV = ("LAKEFLOW_", "AWS_", "POLARS_")  # prefixes of the caller's variables the job gets
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def address_or_default(address: str | None) -> str:
    return (
        address
        or os.environ.get("LAKEFLOW_JOBS_ADDRESS")
        or os.environ.get("RAY_API_SERVER_ADDRESS")
        or DEFAULT_ADDRESS
    )


def job_client(address: str | None) -> Any:
    from ray.job_submission import JobSubmissionClient

    where = address_or_default(address)
    try:
        return JobSubmissionClient(where)
    except Exception as error:  # the SDK raises ConnectionError / RuntimeError with a long text
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RayUnavailable(
            f"cannot reach Ray Jobs at {where}: {first}",
            hint="is the cluster up (cluster/local.sh status)? does RAY_AUTH_MODE match the cluster's?",
        ) from error


def submit_job(
    command: Sequence[str],
    *,
    address: str | None = None,
    working_dir: str = ".",
    env: Mapping[str, str] | None = None,
    submission_id: str | None = None,
) -> str:
    """Submit `lakeflow COMMAND...` as a Ray Job; returns its id."""
    if not command:
        raise RequestError("nothing to submit", hint="lakeflow submit -- materialize PIPELINE ...")
    if command[0] in ("submit", "jobs"):
        raise RequestError(f"`lakeflow {command[0]}` runs where you are, not as a job")
    variables = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV)}
    variables.update(env or {})
    entrypoint = "python -m lakeflow.cli " + shlex.join(command)
    runtime_env = {"working_dir": os.path.abspath(working_dir), "env_vars": variables}
    client = job_client(address)
    deadline = time.monotonic() + 60
    while True:
        try:
            return client.submit_job(
                entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id
            )
        except Exception as error:
            text = str(error).strip()
            # a head that has just started has no job agent yet: it asks to try again later
            if "try again later" in text and time.monotonic() < deadline:
                time.sleep(2.0)
                continue
            first = text.splitlines()[0] if text else type(error).__name__
            raise LakeflowError(f"the job was not accepted: {first}") from error


def follow_job(client: Any, job_id: str, *, out: Any = None, poll: float = 0.5) -> tuple[str, int]:
    """Print the job's log as it grows until it ends; (status, exit code to use)."""
    out = out or sys.stdout
    shown = 0
    while True:
        status = str(client.get_job_status(job_id)).rsplit(".", 1)[-1]
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            out.write(logs[shown:])
            out.flush()
            shown = len(logs)
        if status in TERMINAL:
            break
        time.sleep(poll)
    info = client.get_job_info(job_id)
    code = getattr(info, "driver_exit_code", None)
    if status == "STOPPED":
        return status, 130
    if code is None:
        code = 0 if status == "SUCCEEDED" else 1
    return status, int(code)


def parse_env(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RequestError(f"--env takes KEY=VALUE, not {item!r}")
        out[key] = value
    return out
