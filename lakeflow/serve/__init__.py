"""What keeps running for users: `lf.up`/`down`/`subscribe` (`service`), the HTTP endpoint and
web UI (`web`, `web_runs`), and Ray jobs (`jobs`, `lakeflow submit`).

May import `lakeflow.control` and below; part of the surface.
"""

__all__ = ["jobs", "service", "web", "web_runs"]
