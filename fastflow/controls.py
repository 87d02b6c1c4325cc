"""Operator controls of a running scan: pause, resume, stop, a new stop rule, a no-go region drawn mid-scan.

A control is a small JSON file dropped into the run folder's ``controls/`` inbox (:func:`send_control`; the
command line's ``fastflow control`` and the live view call it). The scan loop reads the inbox between
batches (:class:`ControlInbox`), applies each control in the order it was sent and records it, with the time
it was asked for and the time it took effect, in the store's ``controls`` attribute. A control therefore
acts at the next batch boundary: a batch being measured finishes first (on EPICS, the abort PV still stops a
batch at once).

Writing a file is all a sender does, so a control costs the scan nothing until it is read, works from any
process that can write the run folder, and survives the scan process: a control sent while no scan runs is
applied when the run is resumed.

Actions
-------
``pause`` / ``resume``
    Stop starting batches (the instrument stays where it is) / start again.
``stop``
    End the scan now; what was measured is kept and the reconstruction written. Status ``complete``, stop
    reason ``stopped by the operator``.
``stop_rule``
    New stop coverage (``coverage``), time budget (``time_budget``, seconds) and/or target NRMSE
    (``target_nrmse``, of the error estimate).
``no_go``
    A no-go region (``region``: an inline polygon ``"x,y; x,y; ..."`` or a file, see
    :func:`fastflow.regions.region_mask`): no point inside it is measured from the next batch on.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from fastflow.errors import InputError

CONTROLS_DIR = "controls"
ACTIONS = ("pause", "resume", "stop", "stop_rule", "no_go")


def check_control(action: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate a control and return it as the JSON document that is sent.

    Raises
    ------
    InputError
        For an unknown action, or parameters the action does not take or needs.
    """
    from fastflow.scan import StopRules

    action = str(action).strip().lower().replace("-", "_")
    if action not in ACTIONS:
        raise InputError(f"unknown control {action!r}; use one of {', '.join(ACTIONS)}")
    params = {k: v for k, v in params.items() if v is not None}
    allowed = {"stop_rule": {"coverage", "time_budget", "target_nrmse"}, "no_go": {"region"}}.get(action, set())
    if unknown := sorted(set(params) - allowed):
        raise InputError(f"control {action!r} takes {', '.join(sorted(allowed)) or 'no parameters'}; got {', '.join(unknown)}")
    if action == "stop_rule":
        if not params:
            raise InputError("control 'stop_rule' needs a coverage, a time_budget and/or a target_nrmse")
        rules = StopRules(coverage=params.get("coverage", 1.0), time_budget=params.get("time_budget"),
                          target_nrmse=params.get("target_nrmse"))   # validates
        params.update({name: float(getattr(rules, name)) for name in ("coverage", "time_budget", "target_nrmse")
                       if name in params})
    if action == "no_go":
        if "region" not in params:
            raise InputError("control 'no_go' needs a region (an inline polygon 'x,y; x,y; x,y' or a file)")
        region = str(params["region"])
        if Path(region).expanduser().suffix and Path(region).expanduser().exists():
            region = str(Path(region).expanduser().resolve())     # a file: the scan may run elsewhere
        params["region"] = region
    return {"action": action, **params}


def send_control(run_dir: str | os.PathLike, action: str, source: str = "api", **params: Any) -> Path:
    """Ask the scan of ``run_dir`` to take a control action; returns the control's file.

    Parameters
    ----------
    run_dir : path-like
        The run folder (it must hold a scan store).
    action : str
        One of :data:`ACTIONS`.
    source : str
        Who sent it (``cli``, ``view``, ``flow``...), recorded in the provenance.
    **params
        The action's parameters (see the module's description).

    Raises
    ------
    InputError
        For an unknown action or bad parameters, or a folder that is not a run.
    """
    from fastflow.runs import find_store
    from fastflow.store import now_iso

    run_dir = find_store(run_dir).parent
    doc = check_control(action, params)
    doc.update(requested=now_iso(), requested_unix=time.time(), source=str(source))
    inbox = run_dir / CONTROLS_DIR
    inbox.mkdir(exist_ok=True)
    name = f"{time.time_ns():020d}-{secrets.token_hex(3)}"
    tmp = inbox / f".{name}.tmp"
    tmp.write_text(json.dumps(doc))
    final = inbox / f"{name}.json"
    os.replace(tmp, final)       # atomic: the scan never reads half a control
    return final


class ControlInbox:
    """The controls sent to one run, read once each, in the order they were sent.

    Parameters
    ----------
    run_dir : path-like
        The run folder.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.folder = Path(run_dir) / CONTROLS_DIR
        self.done = self.folder / "applied"

    def poll(self) -> list[dict[str, Any]]:
        """The controls sent since the last call (each moved to ``controls/applied/`` once read).

        A file that is not a valid control is moved aside too, and returned as ``{"action": "invalid",
        "error": ...}`` so that the scan records it instead of failing.
        """
        try:
            files = sorted(self.folder.glob("*.json"))
        except OSError:
            return []
        out = []
        for path in files:
            try:
                doc = json.loads(path.read_text())
                doc = {**doc, **check_control(doc.get("action", ""), {k: v for k, v in doc.items()
                                                                      if k not in ("action", "requested", "requested_unix", "source")})}
            except (OSError, ValueError, AttributeError, InputError) as exc:
                doc = {"action": "invalid", "file": path.name, "error": str(exc)}
            self.done.mkdir(exist_ok=True)
            try:
                os.replace(path, self.done / path.name)
            except OSError:
                continue          # another reader took it
            out.append(doc)
        return out
