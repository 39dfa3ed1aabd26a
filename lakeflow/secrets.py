"""Credentials by reference: `lf.EnvVar("AWS_SECRET_ACCESS_KEY")` in a pipeline's
`storage_options` names where a secret comes from, and is resolved by the process that opens the
lake (the CLI, a notebook, the controller, a worker). Nothing here is ever written to the lake:
what a stored run or trigger record keeps of storage options is their names at most.

>>> pipeline = lf.Pipeline(assets, lake="s3://bucket/lake", storage_options={
...     "AWS_ACCESS_KEY_ID": lf.EnvVar("LAKE_KEY_ID"),
...     "AWS_SECRET_ACCESS_KEY": lf.EnvVar("LAKE_SECRET"),
... })
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from lakeflow.errors import LakeflowError

__all__ = [
    "EnvVar",
    "SecretError",
    "StorageOption",
    "redact",
    "resolve_options",
    "secret_names",
]

REDACTED = "[redacted]"
MIN_SECRET = 4  # shorter values ("true", "1") are not credentials; replacing them would garble text
# option names whose literal values are credentials too (a literal key id is used, never stored)
_CREDENTIAL_WORDS = (
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "ACCESS_KEY",
    "KEY_ID",
    "CREDENTIAL",
    "ACCOUNT_KEY",
)


class SecretError(LakeflowError):
    """A credential reference cannot be resolved in this process."""


@dataclass(frozen=True, slots=True)
class EnvVar:
    """A value read from the environment variable `name` of the process that uses it.

    >>> lf.EnvVar("AWS_SECRET_ACCESS_KEY")
    """

    name: str

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise SecretError(f"EnvVar needs a variable name, not {self.name!r}")

    def resolve(self, *, option: str) -> str:
        value = os.environ.get(self.name)
        if value is None:
            raise SecretError(
                f"storage option {option} reads ${self.name}, which is not set in this process",
                hint=f"export {self.name} here and on every Ray node "
                "(or pass it in the Ray runtime env's env_vars)",
            )
        return value

    def __repr__(self) -> str:
        return f"EnvVar({self.name!r})"


StorageOption = str | EnvVar


def resolve_options(options: Mapping[str, StorageOption]) -> dict[str, str]:
    """Options with every `EnvVar` replaced by its value here; keys upper-cased."""
    out: dict[str, str] = {}
    for key, value in options.items():
        name = str(key).upper()
        out[name] = value.resolve(option=name) if isinstance(value, EnvVar) else str(value)
    return out


def secret_names(options: Mapping[str, StorageOption]) -> frozenset[str]:
    """The (upper-cased) option names whose values are secret: every `EnvVar`, and every option
    whose name says it is a credential."""
    return frozenset(
        str(key).upper()
        for key, value in options.items()
        if isinstance(value, EnvVar) or any(w in str(key).upper() for w in _CREDENTIAL_WORDS)
    )


def redact(text: str, secrets: Collection[str]) -> str:
    """`text` with every secret value in it, or its repr (an error's `KeyError('...')`), replaced
    by `[redacted]` (longest first, so a secret that contains another is hidden whole).

    >>> redact("key=s3cr3t!", {"s3cr3t!"})
    'key=[redacted]'
    """
    forms = {form for value in secrets for form in (value, repr(value)[1:-1])}  # as in errors
    for value in sorted(forms, key=len, reverse=True):
        if len(value) >= MIN_SECRET and value in text:
            text = text.replace(value, REDACTED)
    return text
