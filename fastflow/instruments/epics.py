"""An instrument behind EPICS Channel Access: a stage and a detector named by a :class:`~fastflow.instruments.pvmap.PvMap`.

:class:`EpicsInstrument` implements :class:`~fastflow.instruments.Instrument` over pyepics. Two modes:

- ``point``: per point, put the X and Y setpoints together with put-completion (the axis with the longer travel
  first), wait until both completed and the done-moving PV (if mapped) reads 1 (read together with the abort
  PV), put the detector trigger with completion (completion = acquisition done), then read the value(s) and
  the readbacks; a readback more than half a pixel from the target fails the point. When the PVs share one
  server, which answers a circuit's requests in order, this takes two round trips per point: the reads of
  point *k* go out with the setpoints of point *k+1*, and the done-moving/abort read with the trigger (a
  trigger that finds the stage moving or the abort set is discarded; a stage whose puts complete before the
  move ends is detected at its first move, with a warning, and then every trigger waits for done-moving);
- ``list``: write the batch's X and Y positions to waveforms (in chunks as long as the waveforms), the number
  of points, start, and follow the progress PV until the list is done, reading the values, readback
  positions (and times) of the finished points as they come.

Safety and faults
-----------------
- Every position of a batch is checked against the map's soft limits before anything is written; a position
  outside raises :class:`~fastflow.errors.InputError` and nothing moves. Only PVs of the map are written.
- Every PV operation has a deadline (``timeouts.move`` for moves and list progress, ``timeouts.acquire`` for
  a trigger and its reads). Until then a disconnected PV is waited for and the operation repeated (a put that
  completed because the channel disconnected is not trusted), so a short outage is ridden through; past it,
  :class:`~fastflow.errors.InstrumentError` names the PV and the last point measured.
- **Partial batches**: whenever :meth:`EpicsInstrument.measure` fails or is stopped part-way, the exception
  (:class:`InstrumentError`, :class:`InstrumentAborted`, ``KeyboardInterrupt`` or another interruption such as
  Prefect's termination signal on SIGTERM) carries ``exc.partial``, a
  :class:`~fastflow.instruments.Measurement` of the first ``len(exc.partial)`` points of the batch, in
  order, already counted in :attr:`~EpicsInstrument.elapsed` and :attr:`~EpicsInstrument.path_length`. The
  scan loop stores them before re-raising.
- Abort: a non-zero abort PV stops the batch (:class:`InstrumentAborted`, with ``.partial``); a batch does not
  start while it is set. An interruption (Ctrl-C, SIGTERM) stops a running list through the abort PV (then clears
  it).
- ``dry_run=True`` never writes: it connects, reads, and :meth:`~EpicsInstrument.measure` checks the limits and
  reads the detector and readbacks where the stage is, without moving or triggering.

Keep every PV of the hot loop free of monitors (``auto_monitor=False``, as here): a caproto server delays a
put-completion by 40–48 ms when the client monitors a PV the put changes. Set the EPICS environment
(``EPICS_CA_ADDR_LIST``, ports) before the first Channel Access call of the process.
"""

from __future__ import annotations

import ctypes
import threading
import time
import warnings
from typing import Any

import numpy as np

from fastflow.errors import InputError, InstrumentError
from fastflow.grid import ScanGrid
from fastflow.instruments.base import Measurement
from fastflow.instruments.pvmap import PvMap
from fastflow.segments import Segment, as_segments, fly_flags, flown, place
from fastflow.timing import TimeModel

ECA_NORMAL = 1
_ECA_DISCONN_NUMBER = 24  # ECA_DISCONN = message number 24 (caerr.h)
_RETRY_PAUSE = 0.05  # seconds between attempts while a PV is disconnected
LIST_POLL_INTERVAL = 0.002  # seconds between polls of a running list


class InstrumentAborted(InstrumentError):
    """The abort PV was set (or the user interrupted) while measuring; ``.partial`` holds what was measured."""


_CA_MODULES: tuple[Any, Any] | None = None


def _ca() -> Any:
    """pyepics' ``ca`` and ``dbr`` modules (imported once)."""
    global _CA_MODULES
    if _CA_MODULES is None:
        try:
            from epics import ca, dbr
        except ImportError:
            raise InputError("the EPICS instrument needs pyepics: pip install 'fastflow[epics]'") from None
        _CA_MODULES = (ca, dbr)
    return _CA_MODULES


class _Box:
    """Completion state (and value, for a get) of one CA request with a callback.

    A held lock that the callback releases: cheaper to make than a ``threading.Event`` (a box per request)."""

    __slots__ = ("_lock", "_fired", "status", "value", "scalar")

    def __init__(self, scalar: bool = True) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._fired = False
        self.status: int | None = None
        self.value: Any = None
        self.scalar = scalar

    def done(self) -> None:
        """Mark the request answered (by the CA callback; a repeated call does nothing)."""
        if not self._fired:
            self._fired = True
            self._lock.release()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the answer; True if it came."""
        if self._fired:
            return True
        if self._lock.acquire(timeout=max(timeout, 0.0)):
            self._lock.release()
            return True
        return False

    @property
    def answered(self) -> bool:
        return self._fired


_PENDING: set[_Box] = set()  # keeps the boxes alive while libca holds pointers to them
_CALLBACKS: dict[str, Any] = {}


def _put_callback() -> Any:
    """A ctypes put-completion callback that records the CA status (pyepics' own ignores it)."""
    if "put" not in _CALLBACKS:
        _ca_mod, dbr = _ca()

        def on_put(args: Any) -> None:
            box = args.usr
            if isinstance(box, _Box):
                box.status = int(args.status)
                box.done()

        _CALLBACKS["put"] = ctypes.CFUNCTYPE(None, dbr.event_handler_args)(on_put)
    return _CALLBACKS["put"]


def _get_callback() -> Any:
    """A ctypes get callback for DBR_DOUBLE requests: stores the status and a float (or a float64 array)."""
    if "get" not in _CALLBACKS:
        _ca_mod, dbr = _ca()
        double_p = ctypes.POINTER(ctypes.c_double)

        def on_get(args: Any) -> None:
            box = args.usr
            if not isinstance(box, _Box):
                return
            box.status = int(args.status)
            if box.status == ECA_NORMAL and args.raw_dbr:
                n = int(args.count)
                data = np.ctypeslib.as_array(ctypes.cast(args.raw_dbr, double_p), shape=(n,)).copy()
                box.value = float(data[0]) if box.scalar else data
            box.done()

        _CALLBACKS["get"] = ctypes.CFUNCTYPE(None, dbr.event_handler_args)(on_get)
    return _CALLBACKS["get"]


def _attach(ca: Any) -> None:
    """Start Channel Access if needed and attach this thread to pyepics' context (once per thread)."""
    if ca.libca is None:
        ca.initialize_libca()
    if not ca.current_context():
        ca.use_initial_context()


_CHANNELS: dict[int, _Channel] = {}
_CA_OP_CONN_UP = 6
RESEARCH_AFTER = 0.5  # seconds disconnected before a channel is recreated (a fresh search)


def _connection_callback() -> Any:
    if "conn" not in _CALLBACKS:
        _ca_mod, dbr = _ca()

        def on_connection(args: Any) -> None:
            channel = _CHANNELS.get(args.chid)
            if channel is not None:
                channel.generation += 1
                channel.native = None  # a restarted server may serve the PV with another type or length
                if args.op == _CA_OP_CONN_UP:
                    channel.up.set()
                else:
                    channel.up.clear()
                    channel.down_since = time.monotonic()

        _CALLBACKS["conn"] = ctypes.CFUNCTYPE(None, dbr.connection_args)(on_connection)
    return _CALLBACKS["conn"]


class _Channel:
    """One CA channel of our own (not pyepics' shared cache), so that it can be recreated: libca searches for a
    lost channel with a growing back-off (seconds), while a new channel is searched for at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.up = threading.Event()
        self.down_since = time.monotonic()
        self.chid: Any = None
        self.native: tuple[int, int] | None = None  # (element count, field type) while connected
        self.generation = 0  # connection events so far
        self._create()

    def _create(self) -> None:
        ca, dbr = _ca()
        chid = dbr.chid_t()
        status = ca.libca.ca_create_channel(ctypes.c_char_p(self.name.encode()), _connection_callback(), None, 0,
                                           ctypes.byref(chid))
        if status != ECA_NORMAL:
            raise InstrumentError(f"cannot create a CA channel for {self.name}: {ca.message(status)}")
        self.chid = chid
        _CHANNELS[chid.value] = self
        self.down_since = time.monotonic()

    def recreate(self) -> None:
        """Drop the channel and search for it afresh."""
        ca, _dbr = _ca()
        old = self.chid
        _CHANNELS.pop(old.value, None)
        self.up.clear()
        ca.libca.ca_clear_channel(old)
        self._create()
        ca.flush_io()

    @property
    def connected(self) -> bool:
        return self.up.is_set()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a connection, recreating the channel if it stays lost."""
        deadline = time.monotonic() + timeout
        while not self.up.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if time.monotonic() - self.down_since > RESEARCH_AFTER:
                self.recreate()
            self.up.wait(min(remaining, RESEARCH_AFTER / 2))
        return True

    def _native(self) -> tuple[int, int]:
        native = self.native
        if native is None:
            generation, libca = self.generation, _ca()[0].libca
            native = (int(libca.ca_element_count(self.chid)), int(libca.ca_field_type(self.chid)))
            if self.up.is_set() and generation == self.generation:  # no connection event meanwhile
                self.native = native
        return native

    @property
    def element_count(self) -> int:
        return self._native()[0]

    @property
    def field_type(self) -> int:
        return self._native()[1]

    def close(self) -> None:
        if self.chid is not None:
            _CHANNELS.pop(self.chid.value, None)
            _ca()[0].libca.ca_clear_channel(self.chid)
            self.chid = None


class EpicsInstrument:
    """A scanning instrument over EPICS Channel Access; implements :class:`~fastflow.instruments.Instrument`.

    Parameters
    ----------
    grid : ScanGrid
        Grid indices -> physical stage positions (in the units of the map's limits).
    pv_map : PvMap, dict or path
        The PV map (see :mod:`fastflow.instruments.pvmap`).
    dry_run : bool
        Only read, never write (for checking a map on a beamline).
    timing : TimeModel, optional
        The beamline's time model (a preset, or ``fastflow timing fit`` of an earlier run). On a map that
        can fly (list mode with a ``list.fly`` PV) and a model with ``raster="fly"``, :meth:`measure` flies
        the straight runs of a batch that the model measures faster flown (:func:`fastflow.segments.flown`),
        as the simulated instrument does.

    Raises
    ------
    InputError
        For an invalid map or grid, or without pyepics.
    InstrumentError
        If PVs of the map do not connect within ``timeouts.connect`` (the message lists them).

    Notes
    -----
    :attr:`elapsed` and :attr:`Measurement.times` are wall seconds since the instrument was created.
    """

    def __init__(self, grid: ScanGrid, pv_map: Any, *, dry_run: bool = False, timing: TimeModel | None = None) -> None:
        if not isinstance(grid, ScanGrid):
            raise InputError(f"grid must be a fastflow ScanGrid; got {type(grid).__name__}")
        if timing is not None and not isinstance(timing, TimeModel):
            raise InputError(f"timing must be a fastflow TimeModel; got {type(timing).__name__}")
        self._grid = grid
        self._timing = timing.for_grid(grid) if timing is not None else None
        self._map = PvMap.coerce(pv_map)
        self._dry_run = bool(dry_run)
        self._ca, self._dbr = _ca()
        _attach(self._ca)

        timeouts = self._map.timeouts
        self._names = self._map.names()
        self._pvs = {role: _Channel(name) for role, name in self._names.items()}
        self._ca.flush_io()
        deadline = time.monotonic() + timeouts.connect
        for pv in self._pvs.values():
            pv.wait(max(deadline - time.monotonic(), 0.01))
        missing = [pv.name for pv in self._pvs.values() if not pv.connected]
        if missing:
            raise InstrumentError(
                f"{len(missing)} PV(s) did not connect within {timeouts.connect:g} s: {', '.join(missing)}; "
                "check the names in the PV map, that the IOC runs, and EPICS_CA_ADDR_LIST"
            )
        self._t0 = time.monotonic()
        self._elapsed_at: float | None = None
        self._path_length = 0.0
        self._n_points = 0
        self._last: str = "none yet"
        self._speculate = True  # see _trigger_with_status
        y, x = self._read(["stage.y_readback", "stage.x_readback"], timeouts.acquire, "reading the stage")
        self._position = np.array([float(y), float(x)])
        self._start = self._position.copy()
        if self._map.mode == "list":
            roles = ["list.x_positions", "list.y_positions", "list.values", "list.x_readbacks",
                     "list.y_readbacks", *(f"list.extra.{c}" for c in self._map.list_extra)]
            if "list.times" in self._pvs:
                roles.append("list.times")
            self._capacity = min(self._pvs[r].element_count for r in roles)
        else:
            self._capacity = 0

    # ------------------------------------------------------------------------------------ protocol

    @property
    def grid(self) -> ScanGrid:
        """The scan grid."""
        return self._grid

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names: the detector's main channel, then the extra ones of the map."""
        return self._map.channels

    @property
    def elapsed(self) -> float:
        """Wall seconds since the instrument was created."""
        return time.monotonic() - self._t0

    @property
    def path_length(self) -> float:
        """Stage travel so far, Euclidean, from the readback positions."""
        return self._path_length

    @property
    def position(self) -> np.ndarray:
        """Last known physical ``(y, x)`` stage position (a copy)."""
        return self._position.copy()

    @property
    def n_points(self) -> int:
        """Points measured so far."""
        return self._n_points

    @property
    def pv_map(self) -> PvMap:
        """The PV map."""
        return self._map

    @property
    def dry_run(self) -> bool:
        """True if the instrument never writes."""
        return self._dry_run

    @property
    def can_fly(self) -> bool:
        """True if segments are flown: list mode with a ``list.fly`` PV, and no time model that steps."""
        return ("list.fly" in self._names and self._map.mode == "list"
                and (self._timing is None or self._timing.raster == "fly"))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: kind, mode, PV names, limits, timeouts, channels, grid."""
        lim, tmo = self._map.limits, self._map.timeouts
        return {
            "kind": "epics",
            "mode": self._map.mode,
            "dry_run": self._dry_run,
            "pvs": dict(self._names),
            "pv_map": self._map.to_dict(),
            "limits": {"x_min": lim.x_min, "x_max": lim.x_max, "y_min": lim.y_min, "y_max": lim.y_max},
            "timeouts": {"connect": tmo.connect, "move": tmo.move, "acquire": tmo.acquire},
            "channels": list(self.channels),
            "start": self._start.tolist(),
            "grid": self._grid.to_attrs(),
            "can_fly": self.can_fly,
            **({"timing": self._timing.to_attrs()} if self._timing is not None else {}),
        }

    def __repr__(self) -> str:
        return (f"EpicsInstrument(mode={self._map.mode!r}, prefix={self._map.prefix!r}, "
                f"shape={self._grid.shape}, dry_run={self._dry_run})")

    def check(self) -> dict[str, dict[str, Any]]:
        """Read every PV of the map once (no writes): role -> ``{"pv", "connected", "value"}``.

        Values are read as floats (waveforms: ``"array[N]"``); an unreadable PV gets its error text."""
        out = {}
        for role, pv in self._pvs.items():
            value: Any = None
            if pv.connected:
                try:
                    value = self._read([role], self._map.timeouts.connect, "checking the PV map")[0]
                except InstrumentError as exc:
                    value = str(exc)
                if isinstance(value, np.ndarray):
                    value = f"array[{value.size}]"
            out[role] = {"pv": pv.name, "connected": pv.connected, "value": value}
        return out

    def close(self) -> None:
        """Release the Channel Access channels (the instrument cannot measure afterwards)."""
        for pv in self._pvs.values():
            pv.close()
        self._pvs = {}

    def __enter__(self) -> EpicsInstrument:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def clear_abort(self) -> None:
        """Put 0 to the abort PV (so that batches can run again)."""
        if self._dry_run:
            raise InstrumentError("dry run: refusing to write the abort PV")
        if "abort" in self._pvs:
            self._put("abort", 0, self._map.timeouts.move, "clearing the abort")

    def measure(self, indices: Any) -> Measurement:
        """Visit grid ``indices`` in order and measure each (see the module docstring).

        Raises
        ------
        InputError
            If an index is outside the grid or its position outside the soft limits (nothing moves).
        InstrumentAborted
            If the abort PV is set, or becomes set during the batch (with ``.partial``).
        InstrumentError
            If a PV does not answer within its timeout (with ``.partial``).
        """
        idx = self._grid.check_indices(indices)
        plan = self._timing is not None and self.can_fly
        return self._run(idx, flown(idx, self._timing, self._grid) if plan else [])

    def measure_segments(self, segments: Any) -> tuple[np.ndarray, Measurement]:
        """Measure line segments in visiting order, each flown in one motion where the map can fly
        (:attr:`can_fly`: the ``list.fly`` flags); otherwise their pixels are measured as points.

        Parameters
        ----------
        segments : sequence
            :class:`~fastflow.segments.Segment` objects or ``(first, last)`` pairs of grid indices.

        Returns
        -------
        indices, Measurement
            The pixels measured, in order, and what :meth:`measure` returns for them (same errors, same
            ``.partial`` on failure).
        """
        idx, placed = place(as_segments(segments))
        idx = self._grid.check_indices(idx)
        return idx, self._run(idx, placed if self.can_fly else [])

    def _run(self, idx: np.ndarray, flights: list[Segment]) -> Measurement:
        positions = self._grid.to_position(idx) if len(idx) else np.empty((0, 2))
        self._check_limits(idx, positions)
        if len(idx) == 0:
            return Measurement.empty(len(self.channels))
        acc = _Batch(len(self.channels))
        _attach(self._ca)    # the scan loop may call from a worker thread (measure while the sampler thinks)
        try:
            if self._dry_run:
                self._measure_dry(positions, acc)
            else:
                self._check_not_aborted()
                if self._map.mode == "point":
                    self._measure_points(idx, positions, acc)
                else:
                    self._measure_list(positions, acc, fly_flags(flights, len(idx)))
        except InstrumentError as exc:
            exc.partial = self._commit(acc)  # type: ignore[attr-defined]
            raise
        except Exception as exc:  # pyepics raises several kinds; keep the measured points all the same
            err = InstrumentError(f"EPICS instrument failed after {self._last}: {type(exc).__name__}: {exc}")
            err.partial = self._commit(acc)  # type: ignore[attr-defined]
            raise err from exc
        except BaseException as exc:  # Ctrl-C, SIGTERM (Prefect's TerminationSignal): stop the motion too
            self._stop_after_interrupt()
            exc.partial = self._commit(acc)  # type: ignore[attr-defined]
            raise
        return self._commit(acc)

    # ------------------------------------------------------------------------------------ modes

    def _measure_points(self, idx: np.ndarray, positions: np.ndarray, acc: _Batch) -> None:
        m, tmo = self._map, self._map.timeouts
        reads = ["detector.value", *(f"detector.extra.{c}" for c in m.extra),
                 "stage.y_readback", "stage.x_readback"]
        # the abort PV is read with done-moving, before each trigger (a batch's last point is not re-checked)
        has_abort, has_dmov = "abort" in self._pvs, "stage.done_moving" in self._pvs
        status = [*(["stage.done_moving"] if has_dmov else []), *(["abort"] if has_abort else [])]
        # one server answers a circuit's requests in order: then a read sent with a put sees the state before it
        in_order = self._one_server([*reads, "stage.x_setpoint", "stage.y_setpoint", *status, "detector.trigger"])
        n_ch = len(self.channels)
        tol_y, tol_x = (0.5 * float(d) for d in self._grid.pixel_size)
        acquired: tuple[int, str, float, float] | None = None  # triggered, not read yet
        here = self._position

        def keep(got: list[Any], at: float) -> None:
            i, where, y, x = acquired
            ry, rx = float(got[n_ch]), float(got[n_ch + 1])
            if not (abs(ry - y) <= tol_y and abs(rx - x) <= tol_x):  # also refuses a NaN readback
                raise InstrumentError(
                    f"the stage reached y={ry:g}, x={rx:g} instead of y={y:g}, x={x:g} for {where} "
                    f"(readbacks {self._names['stage.y_readback']}, {self._names['stage.x_readback']}); the point "
                    f"was not kept. Last point measured: {self._last}"
                )
            acc.add_point(got[:n_ch], ry, rx, at - self._t0)
            self._last = f"{where} (batch point {i})"

        for i, (y, x) in enumerate(positions):
            where = f"point {i} of the batch, index ({idx[i, 0]}, {idx[i, 1]})"
            move = [("stage.x_setpoint", float(x)), ("stage.y_setpoint", float(y))]
            if abs(y - here[0]) > abs(x - here[1]):
                move.reverse()  # the axis with the longer travel starts first
            here = (y, x)
            if acquired is not None and in_order:  # read the previous point and send this move in one round trip
                keep(*self._read_then_put(reads, move, tmo.acquire, tmo.move, f"reading {acquired[1]}",
                                          f"moving to {where}"))
            else:
                if acquired is not None:
                    keep(self._read(reads, tmo.acquire, f"reading {acquired[1]}"), time.monotonic())
                self._put_many(move, tmo.move, f"moving to {where}")
            acquired = None
            if not (has_dmov or has_abort):
                self._put("detector.trigger", 1, tmo.acquire, f"acquiring at {where}")
            elif not (in_order and self._trigger_with_status(status, tmo, where)):
                self._settled(has_dmov, has_abort, tmo.move, f"moving to {where}")
                self._put("detector.trigger", 1, tmo.acquire, f"acquiring at {where}")
            acquired = (i, where, float(y), float(x))
        if acquired is not None:
            keep(self._read(reads, tmo.acquire, f"reading {acquired[1]}"), time.monotonic())

    def _trigger_with_status(self, status: list[str], tmo: Any, where: str) -> bool:
        """Read done-moving / abort and put the trigger in one round trip; True if that trigger counts.

        For PVs served by one IOC (which answers a circuit's requests in order, so the reads see the state just
        before the trigger), and only while no such trigger has found the stage moving: a stage whose setpoint
        put completes before the motion ends would otherwise cost an exposure per point. A trigger sent while
        the abort PV was set is discarded (InstrumentAborted)."""
        if not self._speculate:
            return False
        state, _at = self._read_then_put(status, [("detector.trigger", 1)], tmo.move, tmo.acquire,
                                         f"moving to {where}", f"acquiring at {where}")
        if "abort" in status and state[-1]:
            raise self._aborted_while(f"moving to {where}")
        if "stage.done_moving" in status and int(state[0]) != 1:
            self._speculate = False
            warnings.warn(
                f"{self._names['stage.done_moving']} read 0 after the setpoint puts completed: this stage completes "
                "its puts before the move ends, so fastflow now waits for done-moving before each trigger (the "
                f"acquisition at {where} is repeated)", RuntimeWarning, stacklevel=2)
            return False
        return True

    def _one_server(self, roles: list[str]) -> bool:
        """Whether the channels of ``roles`` are all connected to the same server (so one circuit, in order)."""
        hosts = {self._ca.libca.ca_host_name(self._pvs[r].chid) if self._pvs[r].connected else None for r in roles}
        return len(hosts) == 1 and None not in hosts

    def _settled(self, has_dmov: bool, has_abort: bool, timeout: float, action: str) -> None:
        """Wait until done-moving reads 1; raise InstrumentAborted if the abort PV is set meanwhile."""
        if has_dmov:
            self._wait_value("stage.done_moving", 1, timeout, action, watch_abort=has_abort)
        elif has_abort and self._read(["abort"], timeout, action)[0]:
            raise self._aborted_while(action)

    def _aborted_while(self, action: str) -> InstrumentAborted:
        return InstrumentAborted(
            f"aborted by {self._names['abort']} while {action} (that point was not measured); last point "
            f"measured: {self._last}. Clear it (put 0) to continue"
        )

    def _measure_list(self, positions: np.ndarray, acc: _Batch, flags: np.ndarray) -> None:
        m, tmo = self._map, self._map.timeouts
        has_fly = "list.fly" in self._pvs
        has_abort, has_busy, has_times = "abort" in self._pvs, "list.busy" in self._pvs, "list.times" in self._pvs
        arrays = ["list.values", *(f"list.extra.{c}" for c in m.extra), "list.y_readbacks", "list.x_readbacks"]
        if has_times:
            arrays.append("list.times")
        status = ["list.progress", *(["list.busy"] if has_busy else []), *(["abort"] if has_abort else [])]
        n_ch = len(self.channels)
        stall = tmo.move + tmo.acquire
        for first, end in _chunks(flags, self._capacity):
            chunk = positions[first:end]
            n = len(chunk)
            what = f"loading list points {first}..{first + n - 1} of the batch"
            fly = flags[first:end].copy()
            fly[0] = 0                  # a segment longer than the waveforms goes on with a (zero) move
            self._put_many([("list.x_positions", chunk[:, 1]), ("list.y_positions", chunk[:, 0]),
                            *([("list.fly", fly)] if has_fly else []), ("list.n_points", n)], tmo.move, what)
            t_start = time.monotonic() - self._t0
            self._put("list.start", 1, tmo.move, f"starting list points {first}..{first + n - 1}")
            got, last_change = 0, time.monotonic()
            while True:
                state = self._read(status, tmo.move, f"following list points {first}..{first + n - 1}")
                progress = min(int(state[0]), n)
                busy = bool(state[1]) if has_busy else False
                if progress > got:
                    data = self._read(arrays, tmo.acquire, f"reading list results {first}..{first + n - 1}",
                                      count=progress)
                    cols = [np.atleast_1d(np.asarray(a, dtype=float))[got:progress] for a in data]
                    values = np.stack(cols[:n_ch], axis=1)
                    pos = np.stack(cols[n_ch:n_ch + 2], axis=1)
                    if has_times:
                        times = t_start + cols[n_ch + 2]
                    else:
                        times = np.full(progress - got, time.monotonic() - self._t0)
                    acc.add(values, pos, times)
                    got, last_change = progress, time.monotonic()
                    self._last = f"batch point {first + got - 1}"
                if got >= n and not busy:
                    break
                if has_abort and state[-1]:
                    raise InstrumentAborted(self._abort_message(acc))
                if time.monotonic() - last_change > stall:
                    raise InstrumentError(
                        f"list progress PV {self._names['list.progress']} stayed at {got} of {n} for "
                        f"{stall:g} s (timeouts.move + timeouts.acquire); last point measured: {self._last}"
                    )
                time.sleep(LIST_POLL_INTERVAL)

    def _measure_dry(self, positions: np.ndarray, acc: _Batch) -> None:
        tmo = self._map.timeouts
        reads = [r for r in ("detector.value", *(f"detector.extra.{c}" for c in self._map.extra))
                 if r in self._pvs]
        n_ch = len(self.channels)
        for i in range(len(positions)):
            got = self._read([*reads, "stage.y_readback", "stage.x_readback"], tmo.acquire,
                             f"dry-run read for batch point {i}")
            values = [*got[:len(reads)], *[np.nan] * (n_ch - len(reads))]  # unmapped channels: NaN
            acc.add_point(values, float(got[-2]), float(got[-1]), time.monotonic() - self._t0)
            self._last = f"dry-run batch point {i}"

    # ------------------------------------------------------------------------------------ bookkeeping

    def _check_limits(self, idx: np.ndarray, positions: np.ndarray) -> None:
        if len(positions) == 0:
            return
        lim = self._map.limits
        inside = lim.contains(positions[:, 0], positions[:, 1])
        if not np.all(inside):
            k = int(np.argmin(inside))
            raise InputError(
                f"{int((~inside).sum())} of {len(positions)} positions lie outside the stage soft limits "
                f"x in [{lim.x_min:g}, {lim.x_max:g}], y in [{lim.y_min:g}, {lim.y_max:g}] (first: index "
                f"({idx[k, 0]}, {idx[k, 1]}) at y={positions[k, 0]:g}, x={positions[k, 1]:g}); nothing was moved"
            )

    def _check_not_aborted(self) -> None:
        if "abort" in self._pvs and self._read(["abort"], self._map.timeouts.acquire, "reading the abort PV")[0]:
            raise InstrumentAborted(
                f"abort PV {self._names['abort']} is set; clear it (instrument.clear_abort() or put 0) to measure"
            )

    def _abort_message(self, acc: _Batch) -> str:
        return (f"aborted by {self._names['abort']} after {len(acc)} point(s) of the batch "
                f"(last: {self._last}); clear it (put 0) to continue")

    def _commit(self, acc: _Batch) -> Measurement:
        """Turn the accumulated points into a Measurement and account for them."""
        m = acc.measurement()
        if len(m):
            path = np.vstack([self._position, m.positions])
            self._path_length += float(np.hypot(*np.diff(path, axis=0).T).sum())
            self._position = m.positions[-1].copy()
            self._n_points += len(m)
        return m

    def _stop_after_interrupt(self) -> None:
        """After an interruption in list mode: stop the list through the abort PV, then clear it."""
        if self._dry_run or self._map.mode != "list" or "abort" not in self._pvs:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                self._put("abort", 1, 2.0, "stopping after an interrupt")
                if "list.busy" in self._pvs:
                    self._wait_value("list.busy", 0, 2.0, "stopping after an interrupt")
                self._put("abort", 0, 2.0, "clearing the abort after an interrupt")
            except InstrumentError:
                pass  # best effort: the interrupt is re-raised with the partial batch

    # ------------------------------------------------------------------------------------ CA primitives

    def _fail(self, role: str, timeout: float, action: str, detail: str = "") -> InstrumentError:
        return InstrumentError(
            f"PV {self._names[role]} ({role}) did not answer within {timeout:g} s while {action}"
            f"{': ' + detail if detail else ''}; last point measured: {self._last}. Check that the IOC runs "
            "and the PV map, or raise the timeout"
        )

    def _await_connection(self, role: str, deadline: float, timeout: float, action: str) -> None:
        pv = self._pvs[role]
        if not pv.connected and not pv.wait(max(deadline - time.monotonic(), 0.0)):
            raise self._fail(role, timeout, action, "disconnected")

    def _read(self, roles: list[str], timeout: float, action: str, count: int | None = None,
              deadline: float | None = None) -> list[Any]:
        """Read ``roles`` (as float64) in one round trip, riding through disconnects until ``deadline`` (default:
        ``timeout`` s from now).

        Scalars come back as floats, waveforms as arrays of ``count`` elements (default: all)."""
        deadline = time.monotonic() + timeout if deadline is None else deadline
        while True:
            boxes = []
            for role in roles:
                self._await_connection(role, deadline, timeout, action)
                boxes.append(self._start_get(role, count))
            self._ca.flush_io()
            out, failed = self._collect(roles, boxes, deadline)
            if failed is None:
                return out
            if time.monotonic() >= deadline:
                raise self._fail(failed, timeout, action)
            time.sleep(min(_RETRY_PAUSE, max(deadline - time.monotonic(), 0.0)))

    def _read_then_put(self, roles: list[str], items: list[tuple[str, Any]], read_timeout: float,
                       put_timeout: float, read_action: str, put_action: str) -> tuple[list[Any], float]:
        """:meth:`_read` ``roles``, then :meth:`_put_many` ``items``, sent in one flush.

        A Channel Access server handles the requests of a circuit in order, so the reads see the state before
        the puts. Anything short of a clean answer (a disconnected channel, an error status) falls back to the
        two calls one after the other, which ride through disconnects (a repeated put is harmless), within the
        same deadlines. Returns the values and the ``time.monotonic()`` at which they arrived."""
        read_deadline = time.monotonic() + read_timeout
        if not all(self._pvs[r].connected for r in [*roles, *(r for r, _ in items)]):
            values = self._read(roles, read_timeout, read_action, deadline=read_deadline)
            read_at = time.monotonic()
            self._put_many(items, put_timeout, put_action)
            return values, read_at
        gets = [self._start_get(role) for role in roles]
        try:
            puts: list[_Box] | None = [self._start_put(role, value) for role, value in items]
        except Exception:
            puts = None
        self._ca.libca.ca_flush_io()  # libca directly: pyepics' flush_io checks the CA context each call
        values, failed = self._collect(roles, gets, read_deadline)
        if failed is not None:
            values = self._read(roles, read_timeout, read_action, deadline=read_deadline)
        read_at = time.monotonic()
        deadline = read_at + put_timeout
        if puts is None or not all(box.wait(deadline - time.monotonic()) and
                                   box.status == ECA_NORMAL for box in puts):
            self._put_many(items, put_timeout, put_action, deadline=deadline)
        for box in puts or ():
            if box.answered:  # an unanswered one stays referenced: libca may still call back
                _PENDING.discard(box)
        return values, read_at

    def _start_get(self, role: str, count: int | None = None) -> _Box | None:
        """Send one DBR_DOUBLE get with a callback (not flushed); None if CA refused to send it."""
        pv = self._pvs[role]
        native = pv.element_count
        n = native if count is None else max(1, min(count, native))
        box = _Box(scalar=native == 1)
        _PENDING.add(box)
        status = self._ca.libca.ca_array_get_callback(self._dbr.DOUBLE, n, pv.chid, _get_callback(),
                                                      ctypes.py_object(box))
        if status != ECA_NORMAL:
            _PENDING.discard(box)
            return None
        return box

    @staticmethod
    def _collect(roles: list[str], boxes: list[_Box | None], deadline: float) -> tuple[list[Any], str | None]:
        """Wait for the gets of :meth:`_start_get`; returns the values and the first role that failed (or None)."""
        out = []
        for role, box in zip(roles, boxes):
            if box is None or not box.wait(deadline - time.monotonic()):
                return out, role
            _PENDING.discard(box)
            if box.status != ECA_NORMAL or box.value is None:
                return out, role
            out.append(box.value)
        return out, None

    def _put(self, role: str, value: Any, timeout: float, action: str) -> None:
        self._put_many([(role, value)], timeout, action)

    def _put_many(self, items: list[tuple[str, Any]], timeout: float, action: str,
                  deadline: float | None = None) -> None:
        """Put each value with completion, all at once, and wait for every completion (riding through
        disconnects: a put answered by a disconnect is repeated once the PV is back) until ``deadline``
        (default: ``timeout`` s from now)."""
        if self._dry_run:
            raise InstrumentError(f"dry run: refusing to write {', '.join(self._names[r] for r, _ in items)}")
        deadline = time.monotonic() + timeout if deadline is None else deadline
        pending = list(items)
        while pending:
            boxes = []
            for role, value in pending:
                self._await_connection(role, deadline, timeout, action)
                try:
                    boxes.append(self._start_put(role, value))
                except Exception:
                    boxes.append(None)
            self._ca.flush_io()
            retry = []
            for (role, value), box in zip(pending, boxes):
                if box is None:  # could not even send (the channel dropped meanwhile): try again
                    retry.append((role, value))
                    continue
                if not box.wait(deadline - time.monotonic()):
                    raise self._fail(role, timeout, action, "no put completion")
                _PENDING.discard(box)
                if box.status == ECA_NORMAL:
                    continue
                if box.status >> 3 == _ECA_DISCONN_NUMBER or not self._pvs[role].connected:
                    retry.append((role, value))  # completed by a disconnect: not done, repeat it
                else:
                    raise InstrumentError(
                        f"PV {self._names[role]} ({role}) refused the put of {_short(value)} while {action} "
                        f"(CA status {self._ca.message(box.status)}); last point measured: {self._last}"
                    )
            pending = retry
            if pending:
                if time.monotonic() >= deadline:
                    raise self._fail(pending[0][0], timeout, action)
                time.sleep(min(_RETRY_PAUSE, max(deadline - time.monotonic(), 0.0)))

    def _start_put(self, role: str, value: Any) -> _Box:
        """Send one put with completion callback (not flushed)."""
        ca, dbr = self._ca, self._dbr
        pv = self._pvs[role]
        chid, ftype = pv.chid, pv.field_type
        if ftype == dbr.STRING:
            raise InstrumentError(f"PV {self._names[role]} is a string PV; a number was expected")
        ctype = dbr.Map[ftype]
        if isinstance(value, (int, float, np.integer, np.floating)):  # the per-point puts: no numpy round trip
            count = 1
            data = (ctype * 1)(float(value) if ctype in (ctypes.c_double, ctypes.c_float) else int(value))
        else:
            arr = np.atleast_1d(np.asarray(value))
            count = min(len(arr), pv.element_count)
            data = (count * ctype)()
            np.ctypeslib.as_array(data)[:] = arr[:count]
        box = _Box()
        _PENDING.add(box)
        status = ca.libca.ca_array_put_callback(ftype, count, chid, data, _put_callback(), ctypes.py_object(box))
        if status != ECA_NORMAL:
            _PENDING.discard(box)
            raise InstrumentError(f"CA refused to send the put to {self._names[role]}: {ca.message(status)}")
        return box

    def _wait_value(self, role: str, wanted: int, timeout: float, action: str, *, watch_abort: bool = False) -> None:
        """Poll ``role`` until it reads ``wanted``; with ``watch_abort``, raise InstrumentAborted if the abort PV
        is set meanwhile."""
        roles = [role, "abort"] if watch_abort else [role]
        deadline = time.monotonic() + timeout
        while True:
            got = self._read(roles, max(deadline - time.monotonic(), 0.001), action)
            if watch_abort and got[1]:
                raise self._aborted_while(action)
            if int(got[0]) == wanted:
                return
            if time.monotonic() >= deadline:
                raise InstrumentError(
                    f"PV {self._names[role]} ({role}) did not reach {wanted} within {timeout:g} s while {action} "
                    f"(it reads {got[0]:g}); last point measured: {self._last}"
                )
            time.sleep(0.0005)


def _adhoc_client(names: list[str]) -> EpicsInstrument:
    """A bare client for a few PVs by name (its own channels, no map, no grid)."""
    client = object.__new__(EpicsInstrument)
    client._ca, client._dbr = _ca()
    _attach(client._ca)
    client._names = {n: n for n in names}
    client._pvs = {n: _Channel(n) for n in names}
    client._ca.flush_io()
    client._last = "none (direct PV access)"
    client._dry_run = False
    return client


def read_pvs(names: list[str], timeout: float = 5.0) -> list[Any]:
    """Read PVs by name in one round trip (floats, or float64 arrays for waveforms); for scripts and tests.

    Raises
    ------
    InstrumentError
        If a PV does not connect or answer within ``timeout`` seconds.
    """
    client = _adhoc_client(list(names))
    try:
        return client._read(list(names), timeout, "reading")
    finally:
        client.close()


def write_pv(name: str, value: Any, timeout: float = 5.0) -> None:
    """Put ``value`` to the PV ``name`` and wait for the put to complete; for scripts and tests.

    Raises
    ------
    InstrumentError
        If the PV does not connect or complete the put within ``timeout`` seconds.
    """
    client = _adhoc_client([name])
    try:
        client._put(name, value, timeout, "writing")
    finally:
        client.close()


class _Batch:
    """Rows measured so far in a batch, in order: blocks of arrays (:meth:`add`) and single points
    (:meth:`add_point`, kept as Python numbers until needed: cheaper in the per-point loop)."""

    def __init__(self, n_channels: int) -> None:
        self.n_channels = n_channels
        self.values: list[np.ndarray] = []
        self.positions: list[np.ndarray] = []
        self.times: list[np.ndarray] = []
        self.points: list[tuple[list[float], float, float, float]] = []
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def add(self, values: np.ndarray, positions: np.ndarray, times: np.ndarray) -> None:
        self._stack_points()
        self.values.append(values)
        self.positions.append(positions)
        self.times.append(times)
        self.n += len(values)

    def add_point(self, values: list[float], y: float, x: float, t: float) -> None:
        self.points.append((values, y, x, t))
        self.n += 1

    def _stack_points(self) -> None:
        if self.points:
            values, ys, xs, ts = zip(*self.points)
            self.values.append(np.array(values, dtype=float).reshape(len(ts), self.n_channels))
            self.positions.append(np.column_stack([ys, xs]).astype(float))
            self.times.append(np.array(ts, dtype=float))
            self.points = []

    def measurement(self) -> Measurement:
        if not self.n:
            return Measurement.empty(self.n_channels)
        self._stack_points()
        return Measurement(np.concatenate(self.values), np.concatenate(self.positions), np.concatenate(self.times))


def _chunks(flags: np.ndarray, capacity: int) -> list[tuple[int, int]]:
    """``(first, end)`` slices of a list of ``len(flags)`` points, each at most ``capacity`` long, cut before
    the first pixel of a flown segment where one fits (:func:`fastflow.segments.fly_flags`)."""
    out, first, n = [], 0, len(flags)
    while first < n:
        end = min(first + capacity, n)
        if end < n and flags[end]:
            starts = np.flatnonzero(flags[first + 1:end] == 0)     # points that begin with a move
            if len(starts):
                end = first + 1 + int(starts[-1])
        out.append((first, end))
        first = end
    return out


def _short(value: Any) -> str:
    arr = np.asarray(value)
    return f"array[{arr.size}]" if arr.size > 1 else repr(arr.item() if arr.size else value)
