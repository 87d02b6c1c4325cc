"""Prefect flows of the fastflow pipeline (thin orchestration over :mod:`tasks`).

Each flow module runs as a plain script (``python -m flows.adaptive_scan key=value ...``), from the
``fastflow`` command, and as a deployment (``deployments/prefect.yaml``).
"""

import tasks  # noqa: F401 - its import makes Prefect's console print user text (PV names) verbatim
