"""Exceptions raised by fastflow.

Every error a user can cause derives from :class:`FastflowError`; its message says what was wrong and
what to do. The command line prints that message on one line and exits with status 2.
"""

from __future__ import annotations


class FastflowError(Exception):
    """Base class of the errors a user can cause (bad input, bad configuration, unusable files)."""


class InputError(FastflowError, ValueError):
    """An argument, an image or a parameter is invalid (wrong shape, NaN, out of range, unknown name)."""


class StoreError(FastflowError):
    """A scan store cannot be created, opened, appended to or resumed."""


class InstrumentError(FastflowError):
    """The instrument refused a request or failed while measuring."""


class CatalogError(FastflowError):
    """A Tiled catalog or server cannot be reached, refuses the request, or lacks the requested run."""


def is_interruption(exc: BaseException) -> bool:
    """True if ``exc`` asks the program to stop rather than reporting a failure.

    That is every exception outside :class:`Exception`: ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM in the
    ``fastflow`` command), ``SystemExit`` and the termination signal an orchestrator raises when it
    cancels a run (Prefect's ``TerminationSignal`` on SIGTERM). A scan stopped by one is recorded as
    ``interrupted`` and can be resumed; any other exception records it as ``failed``.

    Examples
    --------
    >>> is_interruption(KeyboardInterrupt()), is_interruption(OSError("disk full"))
    (True, False)
    """
    return not isinstance(exc, Exception)
