"""The web UI: a read-only view of the lake (asset graph, partition heatmaps aggregated server
side, partitions, runs with live progress, triggers) and, with a token, a materialize form and
cancel/resume buttons. `ui_routes(...)` returns its starlette routes, for `lakeflow ui` and any
app that mounts them (`serve.web.build_app`). Static files are bundled in `static/`: no CDN.
"""

from lakeflow.serve.ui.routes import ui_routes

__all__ = ["ui_routes"]
