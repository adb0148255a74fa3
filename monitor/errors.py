"""The exceptions railguard raises: few, meaningful, and chained with ``raise ... from``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class RailguardError(Exception):
    """Base of every error railguard raises on purpose."""


class ConfigError(RailguardError):
    """A configuration or rule file is wrong; the message names the file, key and value.

    The command line turns it into exit status 2.
    """


class ProbeError(RailguardError):
    """A signal source could not take a sample (the sample becomes UNKNOWN or failing)."""


class RailwayError(RailguardError):
    """Railway's API answered with an error or could not be reached."""


class RailwayTransientError(RailwayError):
    """Railway was unreachable, timed out, dropped the connection, or answered 5xx or 429.

    Retried by the client; raised once its attempts are spent. ``maybe_applied`` is True when
    a request was sent and its answer lost: a mutation may have taken effect, so the caller
    re-checks Railway's state before sending it again.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        retry_after: float | None = None,
        maybe_applied: bool = False,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied


class RailwayGraphQLError(RailwayError):
    """Railway refused the request (invalid document, not found ...); never retried.

    ``messages`` are Railway's error messages; ``data`` is the partial answer, if any;
    ``paths`` names the root fields (aliases) the errors are about, where Railway said.
    """

    def __init__(
        self,
        operation: str,
        messages: Sequence[str],
        data: dict[str, Any] | None = None,
        paths: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{operation}: {'; '.join(messages)}")
        self.operation = operation
        self.messages = list(messages)
        self.data = data
        # The first element of each error's path (a root field's alias) -> its message.
        self.paths = dict(paths or {})


class RailwayAuthError(RailwayGraphQLError):
    """Railway did not accept the token, or the token does not reach what was asked for."""


class RailwayProtocolError(RailwayError):
    """Railway's answer does not have the shape railguard expects; the message shows where."""


class ChannelError(RailguardError):
    """An alert channel refused or failed to take a notification.

    ``permanent``: retrying cannot help (the outbox gives the message up and says so);
    otherwise it is retried, no sooner than ``retry_after`` seconds when the receiver said.
    """

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class StoreError(RailguardError):
    """The state store cannot be opened or refused a write; the message says what to do."""


class NotLeader(StoreError):
    """A write that leads to an action was refused: this replica no longer holds the lease
    with the epoch it acts under (another replica took over). Nothing was written."""
