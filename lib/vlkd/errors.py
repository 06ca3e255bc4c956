"""Errors meant for users: each says what went wrong, where, and what to do.

The CLI prints a `VlkdError` as one line and exits with its `exit_code`; anything else (a library's error, or a
bug) also gets one line, with `vlkd -v` for its traceback.
"""

from __future__ import annotations


class VlkdError(Exception):
    """A problem the user can fix (bad input, missing artifact, unreachable store)."""

    exit_code = 1


class SpecError(VlkdError):
    """A job spec failed validation; `problems` holds one `field.path: message` line per error."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        count = f"{len(problems)} error{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{source}: {count}: " + "; ".join(problems))


def first_line(exc: BaseException) -> str:
    """A library's exception as one line for the user (its first; its type when it has no message)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def error_lines(exc: VlkdError) -> list[str]:
    """What to print of a user error: one line per problem of an invalid spec (`source: field.path: message`),
    else its message; the CLI and the jobs print the same. One raised in a Ray task or actor reaches the driver as
    Ray's `RayTaskError(VlkdError)`, whose message is the worker's traceback: its `cause` is the error as raised."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, VlkdError):
        exc = cause
    if isinstance(exc, SpecError):
        return [f"{exc.source}: {problem}" for problem in exc.problems]
    return [str(exc)]


class RefError(VlkdError):
    """An artifact ref that does not parse, or names the wrong kind."""

    exit_code = 2


class NotFoundError(VlkdError):
    """An artifact, version, alias or stored object that does not exist."""


class ChecksumError(VlkdError):
    """A downloaded file's size or sha256 differs from its manifest: the stored copy is corrupt."""


class DamagedManifestError(VlkdError):
    """A version's manifest exists but cannot be read as one (empty, cut short, not a manifest)."""


class StorageError(VlkdError):
    """The object store cannot be used: unreachable endpoint, missing bucket, denied access, no credentials."""


class DataError(VlkdError, ValueError):
    """Input data that cannot be used as asked (an empty corpus, a hold-out larger than the data, ...)."""


class KeyExistsError(VlkdError):
    """An exclusive write found the key already taken (another publisher won the race)."""
