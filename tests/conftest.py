"""Test configuration: isolate every state directory before heavy libraries are imported."""

from __future__ import annotations

import os
import tempfile

_SCRATCH = tempfile.mkdtemp(prefix="fastflow-tests-")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["FASTFLOW_DATA_DIR"] = os.path.join(_SCRATCH, "runs")
