"""What every fastflow task shares: the retry rule, a logger that works outside a run too, verbatim console logs."""

from __future__ import annotations

import logging
from typing import Any

from prefect.logging.handlers import PrefectConsoleHandler

from fastflow.errors import InputError


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed task unless it failed on bad input (retrying would fail the same way)."""
    try:
        state.result()
    except InputError:
        return False
    except Exception:  # noqa: BLE001 - any other failure may be transient (instrument, disk, network)
        return True
    return True


def logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run, a plain logger otherwise (e.g. ``task.fn(...)`` in a notebook)."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("fastflow")



class VerbatimConsoleHandler(PrefectConsoleHandler):
    """Prefect's console handler without emoji codes: user text (PV names, paths) is printed as written."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), soft_wrap=True, emoji=False)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as logging.StreamHandler.emit: report, never raise
            self.handleError(record)


def verbatim_console() -> None:
    """Make Prefect's console handlers in this process print log messages verbatim.

    Prefect's console handler prints through rich, which replaces ``:name:`` emoji codes, so a PV name
    such as ``BAR:X:SP`` would appear as ``BAR❌SP`` (``:x:`` is the cross-mark code). Each handler
    becomes a :class:`VerbatimConsoleHandler`, which keeps Prefect's colours, level and format and only
    turns emoji codes off (markup stays as ``PREFECT_LOGGING_MARKUP`` says, off by default). Called when
    the ``tasks`` package is imported, so in every process that runs fastflow's flows or tasks (Dask
    workers included).
    """
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()    # Prefect configures logging lazily; a later call is incremental and keeps handlers
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger))]
    for log in loggers:
        for handler in log.handlers:
            if type(handler) is PrefectConsoleHandler:
                handler.__class__ = VerbatimConsoleHandler
