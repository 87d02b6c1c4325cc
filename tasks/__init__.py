"""Prefect tasks: thin wrappers over the fastflow library with retries, timeouts, caching and logging.

No algorithm lives here; every task calls one library function. Tasks that return large arrays do not
persist their results; tasks whose results are cached persist them as JSON (never pickle).
"""

from tasks.common import verbatim_console

verbatim_console()
