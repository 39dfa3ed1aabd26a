"""The trigger engine the controller hosts while `lakeflow up` is on (`engine`; its schedules
and file sensors in `timed`), and what it follows and remembers (`follow`: table logs, trigger
state). It sees its controller only through the `TriggerHost` protocol (`host`).

May import `lakeflow.plan`, `lakeflow.define`, `lakeflow.lake` and below; never Ray, never
`lakeflow.control`.
"""

__all__ = ["engine", "follow", "host", "timed"]
