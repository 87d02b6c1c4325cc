"""The PV map of an EPICS beamline: which process variables move the stage, trigger the detector and run lists.

A :class:`PvMap` names every PV that :class:`fastflow.instruments.epics.EpicsInstrument` reads or writes, the
stage's soft limits, the timeouts and the acquisition mode. It is loaded from a TOML (or, with PyYAML
installed, YAML) file or a dict, validated, and written back with :meth:`PvMap.save`.

PV names may contain the macro ``$(P)`` (or ``${P}``), replaced by ``prefix``; a name without it is used
as written. Example (TOML)::

    mode = "point"            # "point": move, trigger, read per point; "list": hand the IOC a whole batch
    prefix = "SIM:"

    [stage]
    x_setpoint = "$(P)X:SP"
    y_setpoint = "$(P)Y:SP"
    x_readback = "$(P)X:RBV"
    y_readback = "$(P)Y:RBV"
    done_moving = "$(P)DMOV"  # optional: 1 when the stage has stopped

    [detector]
    trigger = "$(P)DET:TRIG"  # put with completion; completion = acquisition done
    value = "$(P)DET:VAL"
    channel = "value"         # name of the value's channel
    [detector.extra]          # optional further channels, read after each trigger: name = PV
    count = "$(P)DET:COUNT"

    [list]                    # needed for mode = "list"
    x_positions = "$(P)LIST:X"
    y_positions = "$(P)LIST:Y"
    n_points = "$(P)LIST:N"
    start = "$(P)LIST:START"
    progress = "$(P)LIST:PROGRESS"
    values = "$(P)LIST:VAL"
    x_readbacks = "$(P)LIST:XRBV"
    y_readbacks = "$(P)LIST:YRBV"
    times = "$(P)LIST:TIMES"  # optional: seconds since start at which each point finished
    busy = "$(P)LIST:BUSY"    # optional: 1 while the list runs
    fly = "$(P)LIST:FLY"      # optional: per point, 1 = flown to from the point before (fly-scan segments)
    [list.extra]              # one waveform per detector.extra channel
    count = "$(P)LIST:COUNT"

    abort = "$(P)ABORT"       # optional: non-zero means stop

    [limits]                  # physical units of the scan grid; required
    x_min = 0.0
    x_max = 31.0
    y_min = 0.0
    y_max = 31.0

    [timeouts]                # seconds; optional
    connect = 5.0
    move = 30.0               # per move (point mode) or without progress (list mode)
    acquire = 10.0            # per trigger (point mode)
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastflow.errors import InputError

MODES = ("point", "list")

STAGE_KEYS = ("x_setpoint", "y_setpoint", "x_readback", "y_readback", "done_moving")
DETECTOR_KEYS = ("trigger", "value")
LIST_KEYS = (
    "x_positions", "y_positions", "n_points", "start", "progress", "values",
    "x_readbacks", "y_readbacks", "times", "busy", "fly",
)
LIMIT_KEYS = ("x_min", "x_max", "y_min", "y_max")
TIMEOUT_KEYS = ("connect", "move", "acquire")
DEFAULT_TIMEOUTS = {"connect": 5.0, "move": 30.0, "acquire": 10.0}

_REQUIRED = {
    "point": ("stage.x_setpoint", "stage.y_setpoint", "stage.x_readback", "stage.y_readback",
              "detector.trigger", "detector.value"),
    "list": ("stage.x_readback", "stage.y_readback", "list.x_positions", "list.y_positions", "list.n_points",
             "list.start", "list.progress", "list.values", "list.x_readbacks", "list.y_readbacks"),
}
_TOP_KEYS = ("mode", "prefix", "stage", "detector", "list", "abort", "limits", "timeouts")
_MACRO = re.compile(r"\$\(P\)|\$\{P\}")
_PV_NAME = re.compile(r"^[A-Za-z0-9_:.\-\[\]<>;$(){}]+$")


@dataclass(frozen=True)
class Limits:
    """Soft limits of the stage in the grid's physical units (inclusive)."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float

    def contains(self, y: Any, x: Any) -> Any:
        """True where ``(y, x)`` lies within the limits (works on arrays)."""
        return (x >= self.x_min) & (x <= self.x_max) & (y >= self.y_min) & (y <= self.y_max)


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection, a move (or list progress) and an acquisition."""

    connect: float = DEFAULT_TIMEOUTS["connect"]
    move: float = DEFAULT_TIMEOUTS["move"]
    acquire: float = DEFAULT_TIMEOUTS["acquire"]


@dataclass(frozen=True)
class PvMap:
    """Validated PV map; build it with :meth:`from_dict` or :meth:`load` (see the module docstring).

    Attributes
    ----------
    mode : str
        ``"point"`` or ``"list"``.
    prefix : str
        Replaces ``$(P)`` / ``${P}`` in the PV names.
    stage, detector, list : dict of str to str
        Role -> PV name template (unexpanded), only the roles given.
    channel : str
        Name of the main detector channel.
    extra : dict of str to str
        Extra detector channels (point mode): channel name -> PV template.
    list_extra : dict of str to str
        Extra channel waveforms (list mode): channel name -> PV template.
    abort : str or None
        Abort PV template.
    limits : Limits
    timeouts : Timeouts
    """

    mode: str
    prefix: str
    stage: dict[str, str]
    detector: dict[str, str]
    list: dict[str, str]
    limits: Limits
    channel: str = "value"
    extra: dict[str, str] = field(default_factory=dict)
    list_extra: dict[str, str] = field(default_factory=dict)
    abort: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)

    # ------------------------------------------------------------------------------------ loading

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "PV map") -> PvMap:
        """Validate a dict (as read from TOML/YAML) and build the map.

        Raises
        ------
        InputError
            For unknown keys, missing PVs the mode needs, bad names, inverted or missing limits, bad
            timeouts or an unknown mode; the message names the key and ``source``.
        """
        if not isinstance(data, dict):
            raise InputError(f"{source}: must be a table/mapping; got {type(data).__name__}")
        _check_keys(data, _TOP_KEYS, source, "")
        mode = str(data.get("mode", "point")).strip().lower()
        if mode not in MODES:
            raise InputError(f"{source}: mode must be 'point' or 'list'; got {data.get('mode')!r}")
        prefix = data.get("prefix", "")
        if not isinstance(prefix, str):
            raise InputError(f"{source}: prefix must be a string; got {prefix!r}")

        stage = _section(data, "stage", STAGE_KEYS, source)
        det_raw = dict(_table(data, "detector", source))
        channel = det_raw.pop("channel", "value")
        extra = _names(det_raw.pop("extra", {}), "detector.extra", source)
        detector = _section({"detector": det_raw}, "detector", DETECTOR_KEYS, source)
        list_raw = dict(_table(data, "list", source))
        list_extra = _names(list_raw.pop("extra", {}), "list.extra", source)
        lst = _section({"list": list_raw}, "list", LIST_KEYS, source)
        if not isinstance(channel, str) or not channel.strip():
            raise InputError(f"{source}: detector.channel must be a non-empty string; got {channel!r}")
        abort = data.get("abort")
        if abort is not None:
            abort = _name(abort, "abort", source)

        found = {f"stage.{k}" for k in stage} | {f"detector.{k}" for k in detector} | {f"list.{k}" for k in lst}
        missing = [key for key in _REQUIRED[mode] if key not in found]
        if missing:
            raise InputError(f"{source}: mode {mode!r} needs these PVs, which are missing: {', '.join(missing)}")
        names = [channel, *extra]
        if len(set(names)) != len(names):
            raise InputError(f"{source}: channel names must be unique; got {names}")
        if mode == "list" and set(list_extra) != set(extra):
            raise InputError(
                f"{source}: in list mode every detector.extra channel needs a list.extra waveform and vice "
                f"versa; detector.extra has {sorted(extra)}, list.extra has {sorted(list_extra)}"
            )
        limits = _limits(data.get("limits"), source)
        timeouts = _timeouts(data.get("timeouts", {}), source)
        return cls(mode=mode, prefix=prefix, stage=stage, detector=detector, list=lst, limits=limits,
                   channel=channel.strip(), extra=extra, list_extra=list_extra, abort=abort, timeouts=timeouts)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PvMap:
        """Read a ``.toml`` (or ``.yaml``/``.yml``, with PyYAML installed) PV map file.

        Raises
        ------
        InputError
            If the file is missing, unreadable, not valid TOML/YAML, or an invalid map.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read PV map {p}: {exc.strerror or exc}") from None
        suffix = p.suffix.lower()
        if suffix in (".yaml", ".yml"):
            yaml = _yaml()
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise InputError(f"PV map {p} is not valid YAML: {exc}") from None
        elif suffix == ".toml":
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise InputError(f"PV map {p} is not valid TOML: {exc}") from None
        else:
            raise InputError(f"PV map {p}: unknown extension {p.suffix!r}; use .toml (or .yaml/.yml)")
        return cls.from_dict(data, source=f"PV map {p}")

    @classmethod
    def coerce(cls, value: PvMap | dict[str, Any] | str | os.PathLike[str]) -> PvMap:
        """A :class:`PvMap` from a map, a dict or a file path."""
        if isinstance(value, PvMap):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value)
        if isinstance(value, (str, os.PathLike)):
            return cls.load(value)
        raise InputError(f"pv_map must be a PvMap, a dict or a file path; got {type(value).__name__}")

    # ------------------------------------------------------------------------------------ writing

    def to_dict(self) -> dict[str, Any]:
        """The map as plain data (unexpanded names), the inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {"mode": self.mode, "prefix": self.prefix}
        if self.abort is not None:
            out["abort"] = self.abort
        out["stage"] = dict(self.stage)
        det: dict[str, Any] = {**self.detector, "channel": self.channel}
        if self.extra:
            det["extra"] = dict(self.extra)
        out["detector"] = det
        if self.list:
            lst: dict[str, Any] = dict(self.list)
            if self.list_extra:
                lst["extra"] = dict(self.list_extra)
            out["list"] = lst
        out["limits"] = {k: getattr(self.limits, k) for k in LIMIT_KEYS}
        out["timeouts"] = {k: getattr(self.timeouts, k) for k in TIMEOUT_KEYS}
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the map as TOML (``.toml``) or YAML (``.yaml``/``.yml``, needs PyYAML); returns the path."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix in (".yaml", ".yml"):
            text = _yaml().safe_dump(self.to_dict(), sort_keys=False)
        elif suffix == ".toml":
            text = to_toml(self.to_dict())
        else:
            raise InputError(f"cannot write PV map {p}: use a .toml (or .yaml/.yml) file name")
        try:
            p.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write PV map {p}: {exc.strerror or exc}") from None
        return p

    # ------------------------------------------------------------------------------------ names

    def expand(self, template: str) -> str:
        """Replace ``$(P)``/``${P}`` in ``template`` by the prefix."""
        return _MACRO.sub(lambda _m: self.prefix, template)

    def pv(self, role: str) -> str | None:
        """The expanded PV name of a role like ``"stage.x_setpoint"``, ``"abort"`` or
        ``"detector.extra.count"``; ``None`` if the map does not have it."""
        section, _, key = role.partition(".")
        if section == "abort" and not key:
            return self.expand(self.abort) if self.abort else None
        table = {"stage": self.stage, "detector": self.detector, "list": self.list}.get(section)
        if table is None:
            raise InputError(f"unknown PV role {role!r}")
        if key.startswith("extra."):
            table, key = (self.extra if section == "detector" else self.list_extra), key[6:]
        name = table.get(key)
        return self.expand(name) if name else None

    def names(self) -> dict[str, str]:
        """Every PV of the map: role -> expanded name."""
        out: dict[str, str] = {}
        for section, table in (("stage", self.stage), ("detector", self.detector), ("list", self.list)):
            out.update({f"{section}.{k}": self.expand(v) for k, v in table.items()})
        out.update({f"detector.extra.{k}": self.expand(v) for k, v in self.extra.items()})
        out.update({f"list.extra.{k}": self.expand(v) for k, v in self.list_extra.items()})
        if self.abort:
            out["abort"] = self.expand(self.abort)
        return out

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names in the order of :attr:`Measurement.values` columns."""
        return (self.channel, *self.extra)


# ---------------------------------------------------------------------------------------- helpers


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], source: str, where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        place = f" in [{where}]" if where else ""
        raise InputError(
            f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}{place}; "
            f"allowed: {', '.join(allowed)}"
        )


def _table(data: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{source}: [{key}] must be a table; got {value!r}")
    return value


def _section(data: dict[str, Any], key: str, allowed: tuple[str, ...], source: str) -> dict[str, str]:
    table = _table(data, key, source)
    _check_keys(table, allowed, source, key)
    return {k: _name(v, f"{key}.{k}", source) for k, v in table.items() if v not in (None, "")}


def _names(value: Any, where: str, source: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{source}: [{where}] must be a table of channel name = PV name; got {value!r}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k.strip():
            raise InputError(f"{source}: [{where}] has an empty channel name")
        out[k.strip()] = _name(v, f"{where}.{k}", source)
    return out


def _name(value: Any, where: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip() or not _PV_NAME.match(value.strip()):
        raise InputError(f"{source}: {where} must be a PV name (letters, digits, :_.-[]<>;); got {value!r}")
    return value.strip()


def _number(value: Any, where: str, source: str) -> float:
    if isinstance(value, bool):
        raise InputError(f"{source}: {where} must be a number; got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{source}: {where} must be a number; got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{source}: {where} must be finite; got {value!r}")
    return number


def _limits(value: Any, source: str) -> Limits:
    if value is None:
        raise InputError(
            f"{source}: [limits] with x_min, x_max, y_min, y_max (physical units) is required, so that no "
            "position outside them is ever sent to the stage"
        )
    if not isinstance(value, dict):
        raise InputError(f"{source}: [limits] must be a table; got {value!r}")
    _check_keys(value, LIMIT_KEYS, source, "limits")
    missing = [k for k in LIMIT_KEYS if k not in value]
    if missing:
        raise InputError(f"{source}: [limits] lacks {', '.join(missing)}")
    lim = {k: _number(value[k], f"limits.{k}", source) for k in LIMIT_KEYS}
    for axis in "xy":
        if lim[f"{axis}_min"] > lim[f"{axis}_max"]:
            raise InputError(
                f"{source}: limits are inverted: {axis}_min = {lim[f'{axis}_min']:g} > "
                f"{axis}_max = {lim[f'{axis}_max']:g}"
            )
    return Limits(**lim)


def _timeouts(value: Any, source: str) -> Timeouts:
    if value is None:
        return Timeouts()
    if not isinstance(value, dict):
        raise InputError(f"{source}: [timeouts] must be a table; got {value!r}")
    _check_keys(value, TIMEOUT_KEYS, source, "timeouts")
    out = {}
    for k, v in value.items():
        seconds = _number(v, f"timeouts.{k}", source)
        if seconds <= 0:
            raise InputError(f"{source}: timeouts.{k} must be > 0 seconds; got {v!r}")
        out[k] = seconds
    return Timeouts(**out)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise InputError("YAML PV maps need PyYAML (pip install pyyaml); or use a .toml file") from None
    return yaml


def to_toml(data: dict[str, Any]) -> str:
    """Write nested dicts of strings, numbers and booleans as TOML (enough for a PV map)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        raise InputError(f"cannot write {v!r} to TOML")

    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else scalar(k)

    def table(d: dict[str, Any], path: list[str]) -> None:
        plain = [(k, v) for k, v in d.items() if not isinstance(v, dict)]
        nested = [(k, v) for k, v in d.items() if isinstance(v, dict)]
        if path and (plain or not nested):
            lines.append("")
            lines.append("[" + ".".join(key(p) for p in path) + "]")
        lines.extend(f"{key(k)} = {scalar(v)}" for k, v in plain)
        for k, v in nested:
            table(v, [*path, k])

    table(data, [])
    return "\n".join(lines).lstrip("\n") + "\n"
