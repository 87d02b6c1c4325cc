"""What every fastflow task shares: the retry rule and a logger that works outside a run too."""

from __future__ import annotations

import logging
from typing import Any

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
