"""A caproto soft IOC that simulates a scanning beamline, for tests and demos of the EPICS instrument.

The sample is an image; the physics is that of :class:`~fastflow.instruments.simulated.SimulatedInstrument`
(the same :class:`~fastflow.timing.TimeModel`: ``--timing`` names a preset or a JSON file, else ``--dwell``,
``--speed`` and ``--settle`` make one; the same noise models and generator: with the same seed and the same
points, the values and the times equal those of the simulated instrument). Wall-clock sleeps are multiplied
by ``time_scale`` so that tests run faster than real time.

Fly scans: in a list, the points flagged in ``LIST:FLY`` are flown to from the point before, in one continuous
motion with the detector triggered on position and no settle (a fly-scan axis), each flown run at equal steps
from the unflagged point that starts it; they cost what :meth:`TimeModel.fly_durations
<fastflow.timing.TimeModel.fly_durations>` says. A list with flags is refused when the time model cannot fly
(``raster="step"``) or when a flagged run is not at equal steps.

PVs (``P`` is the prefix, default ``SIM:``):

============================  ======================================================================
``P X:SP``, ``P Y:SP``        stage setpoints (physical units); a put completes when the stage has stopped
``P X:RBV``, ``P Y:RBV``      stage readbacks: the target once the travel ends (the settle follows)
``P DMOV``                    1 when the stage is not moving (travel and settle over)
``P DET:TRIG``                put with completion: acquire ``dwell`` at the current position
``P DET:VAL``, ``P DET:COUNT``  last value, number of acquisitions started so far
``P LIST:X``, ``P LIST:Y``    waveforms of the positions of a list scan (``--max-points`` long)
``P LIST:FLY``                per list point, 1 = flown to from the point before (a fly-scan segment)
``P LIST:N``                  number of points of the list; ``P LIST:START`` starts it (returns at once)
``P LIST:PROGRESS``           points finished; ``P LIST:BUSY`` 1 while the list runs
``P LIST:VAL``, ``P LIST:COUNT``  values (and acquisition numbers) of the finished points
``P LIST:XRBV``, ``P LIST:YRBV``, ``P LIST:TIMES``  readback positions, finishing times (s since start)
``P ABORT``                   non-zero stops the stage and any list; moves and lists are refused until 0
============================  ======================================================================

Setpoints outside the stage limits (the grid extent plus half a pixel) are clipped, as a motor stops at its
limit switch. Run it with ``python -m fastflow.instruments.ioc --sample NAME --prefix P`` (see :func:`main`);
it binds to ``EPICS_CAS_INTF_ADDR_LIST`` (default ``127.0.0.1``) and the port of ``EPICS_CAS_SERVER_PORT``.
:func:`start_ioc` launches it on free loopback ports for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastflow.errors import InputError, InstrumentError
from fastflow.grid import ScanGrid
from fastflow.instruments.pvmap import Limits, PvMap, Timeouts
from fastflow.instruments.simulated import SimulatedInstrument
from fastflow.segments import charge_flights, segments_from_flags
from fastflow.timing import TimeModel, load_time_model

DEFAULT_PREFIX = "SIM:"
DEFAULT_MAX_POINTS = 2000  # 16 kB per waveform: within libca's default EPICS_CA_MAX_ARRAY_BYTES
_PUBLISH_PERIOD = 0.002  # seconds between progress updates of a list scan


def pv_map_for(
    prefix: str,
    grid: ScanGrid,
    *,
    mode: str = "point",
    timeouts: Timeouts | dict[str, float] | None = None,
    extra_channels: bool = False,
) -> PvMap:
    """The PV map of the simulated beamline served with ``prefix`` over ``grid``.

    Parameters
    ----------
    prefix : str
        The IOC's PV prefix.
    grid : ScanGrid
        The IOC's grid; the soft limits are its extent plus half a pixel on each side.
    mode : {"point", "list"}
    timeouts : Timeouts or dict, optional
        Seconds for ``connect``, ``move`` and ``acquire``; defaults of :class:`Timeouts` otherwise.
    extra_channels : bool
        Add a second channel ``count`` (the IOC's acquisition counter) to exercise multi-channel reads.
    """
    (y0, y1, x0, x1), (dy, dx) = grid.extent, grid.pixel_size
    t = timeouts if isinstance(timeouts, dict) else (vars(timeouts) if timeouts is not None else {})
    data: dict[str, Any] = {
        "mode": mode,
        "prefix": prefix,
        "stage": {"x_setpoint": "$(P)X:SP", "y_setpoint": "$(P)Y:SP", "x_readback": "$(P)X:RBV",
                  "y_readback": "$(P)Y:RBV", "done_moving": "$(P)DMOV"},
        "detector": {"trigger": "$(P)DET:TRIG", "value": "$(P)DET:VAL", "channel": "value"},
        "list": {"x_positions": "$(P)LIST:X", "y_positions": "$(P)LIST:Y", "n_points": "$(P)LIST:N",
                 "start": "$(P)LIST:START", "progress": "$(P)LIST:PROGRESS", "values": "$(P)LIST:VAL",
                 "x_readbacks": "$(P)LIST:XRBV", "y_readbacks": "$(P)LIST:YRBV", "times": "$(P)LIST:TIMES",
                 "busy": "$(P)LIST:BUSY", "fly": "$(P)LIST:FLY"},
        "abort": "$(P)ABORT",
        "limits": {"x_min": x0 - dx / 2, "x_max": x1 + dx / 2, "y_min": y0 - dy / 2, "y_max": y1 + dy / 2},
        "timeouts": dict(t),
    }
    if extra_channels:
        data["detector"]["extra"] = {"count": "$(P)DET:COUNT"}
        data["list"]["extra"] = {"count": "$(P)LIST:COUNT"}
    return PvMap.from_dict(data, source="simulated beamline PV map")


# ------------------------------------------------------------------------------------------ the IOC


class _Stage:
    """Both axes move toward the target at once; a move takes what the time model says (``move_times``),
    then ``settle``; the position in between is interpolated along the straight line."""

    def __init__(self, position: np.ndarray, timing: TimeModel, time_scale: float) -> None:
        self.timing, self.settle, self.scale = timing, timing.settle, time_scale
        self.origin = position.astype(float).copy()  # where the current move started
        self.target = self.origin.copy()
        self.t0 = self.t_travel = self.t_end = time.monotonic()
        self.plan_id = 0

    def at(self, t: float) -> np.ndarray:
        """Position at wall time ``t``."""
        if t >= self.t_travel or self.scale == 0:
            return self.target.copy()
        fraction = (t - self.t0) / (self.t_travel - self.t0)
        return self.origin + (self.target - self.origin) * min(max(fraction, 0.0), 1.0)

    def plan(self, target: np.ndarray, t: float) -> None:
        """Head for ``target`` from wherever the stage is at ``t``."""
        if np.array_equal(target, self.target):
            return
        here = self.at(t)
        step = target.astype(float) - here
        self.origin, self.target, self.t0 = here, target.astype(float).copy(), t
        self.t_travel = t + float(self.timing.move_times(step[None, :])[0]) * self.scale
        self.t_end = self.t_travel + (self.settle * self.scale if step.any() else 0.0)
        self.plan_id += 1

    def stop(self, t: float) -> None:
        """Stop where the stage is now."""
        here = self.at(t)
        self.origin, self.target, self.t0 = here, here.copy(), t
        self.t_travel = self.t_end = t
        self.plan_id += 1

    def place(self, position: np.ndarray, t: float) -> None:
        """Set the position without a move (after a list scan)."""
        self.origin, self.target = position.astype(float).copy(), position.astype(float).copy()
        self.t0 = self.t_travel = self.t_end = t
        self.plan_id += 1


async def _nap(remaining: float) -> None:
    """Sleep toward a deadline ``remaining`` s away, precisely: the event loop's timers have a resolution of
    about 1 ms, so the last 1.5 ms are spent yielding to it (callers loop until their deadline)."""
    if remaining > 0.0015:
        await asyncio.sleep(min(remaining - 0.0015, 0.02))
    else:
        await asyncio.sleep(0)


def _make_group_class(max_points: int, start: tuple[float, float]) -> type:
    """The PVGroup class (built lazily so that importing this module does not need caproto)."""
    from caproto.server import PVGroup, pvproperty

    zeros = [0.0] * max_points
    izeros = [0] * max_points

    class BeamlineIOC(PVGroup):
        """Stage + detector + list scans over a sample image."""

        x_sp = pvproperty(name="X:SP", value=float(start[1]), precision=6)
        y_sp = pvproperty(name="Y:SP", value=float(start[0]), precision=6)
        x_rbv = pvproperty(name="X:RBV", value=float(start[1]), precision=6, read_only=True)
        y_rbv = pvproperty(name="Y:RBV", value=float(start[0]), precision=6, read_only=True)
        dmov = pvproperty(name="DMOV", value=1, read_only=True)
        trig = pvproperty(name="DET:TRIG", value=0)
        det_val = pvproperty(name="DET:VAL", value=0.0, precision=6, read_only=True)
        det_count = pvproperty(name="DET:COUNT", value=0, read_only=True)
        list_x = pvproperty(name="LIST:X", value=zeros, max_length=max_points)
        list_y = pvproperty(name="LIST:Y", value=zeros, max_length=max_points)
        list_fly = pvproperty(name="LIST:FLY", value=izeros, max_length=max_points)
        list_n = pvproperty(name="LIST:N", value=0)
        list_start = pvproperty(name="LIST:START", value=0)
        list_progress = pvproperty(name="LIST:PROGRESS", value=0, read_only=True)
        list_busy = pvproperty(name="LIST:BUSY", value=0, read_only=True)
        list_val = pvproperty(name="LIST:VAL", value=zeros, max_length=max_points, read_only=True)
        list_count = pvproperty(name="LIST:COUNT", value=izeros, max_length=max_points, read_only=True)
        list_xrbv = pvproperty(name="LIST:XRBV", value=zeros, max_length=max_points, read_only=True)
        list_yrbv = pvproperty(name="LIST:YRBV", value=zeros, max_length=max_points, read_only=True)
        list_times = pvproperty(name="LIST:TIMES", value=zeros, max_length=max_points, read_only=True)
        abort = pvproperty(name="ABORT", value=0)

        def __init__(self, *args: Any, sim: SimulatedInstrument, stage: _Stage, limits: Limits,
                     dwell: float, early_completion: bool = False, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.sim, self.stage, self.limits, self.dwell = sim, stage, limits, dwell
            self.early_completion = early_completion
            self.max_points = max_points
            self.count = 0
            self.aborted = False
            self.list_task: asyncio.Task | None = None
            self.motion: asyncio.Task | None = None
            self.published = self.rbv_published = -1     # plans whose done-moving / readbacks are out

        # ------------------------------------------------------------------------- helpers

        def clip(self, y: float, x: float) -> np.ndarray:
            lim = self.limits
            return np.array([min(max(y, lim.y_min), lim.y_max), min(max(x, lim.x_min), lim.x_max)])

        def pixel(self, positions: np.ndarray) -> np.ndarray:
            grid = self.sim.grid
            idx = np.rint((positions - np.asarray(grid.origin)) / np.asarray(grid.pixel_size)).astype(np.int64)
            return np.clip(idx, 0, np.asarray(grid.shape) - 1)

        def detect(self, positions: np.ndarray) -> np.ndarray:
            """Values at the pixels under ``positions`` (n, 2), drawing noise in order."""
            return self.sim.measure(self.pixel(positions)).values[:, 0]

        async def move_to(self, target: np.ndarray) -> np.ndarray:
            """Head for ``target`` and return when the stage has stopped (at the target unless aborted).

            One task runs the motion; every setpoint put waits for it, so the X and Y puts of a move complete
            together (unless ``early_completion``: then the put returns once the move has started)."""
            stage = self.stage
            if not self.aborted:
                stage.plan(target, time.monotonic())
            if stage.t_end > time.monotonic() and self.dmov.value != 0:
                await self.dmov.write(0)
            if self.motion is None or self.motion.done():
                self.motion = asyncio.get_running_loop().create_task(self.run_motion())
            if not self.early_completion:
                await asyncio.shield(self.motion)
            return stage.target

        async def run_motion(self) -> None:
            """Follow the stage until it has stopped (a new setpoint moves ``t_travel`` and ``t_end`` on): the
            readbacks show the target once the travel ends (during the settle), done-moving goes to 1 once
            the settle ends; each once per plan."""
            stage = self.stage
            while True:
                now = time.monotonic()
                if stage.t_travel > now:
                    await _nap(stage.t_travel - now)
                elif self.rbv_published != stage.plan_id:
                    self.rbv_published = stage.plan_id
                    await self.x_rbv.write(float(stage.target[1]))
                    await self.y_rbv.write(float(stage.target[0]))
                elif stage.t_end > now:
                    await _nap(stage.t_end - now)
                elif self.published != stage.plan_id:
                    self.published = stage.plan_id
                    await self.dmov.write(1)
                else:
                    return

        # ------------------------------------------------------------------------- point mode

        @x_sp.putter
        async def x_sp(self, instance: Any, value: float) -> float:
            target = self.clip(self.stage.target[0], float(value))
            reached = await self.move_to(target)
            return float(reached[1]) if self.aborted else float(target[1])

        @y_sp.putter
        async def y_sp(self, instance: Any, value: float) -> float:
            target = self.clip(float(value), self.stage.target[1])
            reached = await self.move_to(target)
            return float(reached[0]) if self.aborted else float(target[0])

        @trig.putter
        async def trig(self, instance: Any, value: int) -> int:
            stage = self.stage
            now = time.monotonic()
            t_end = now + self.dwell * stage.scale
            # a stage at rest stays put through the dwell: read the sample now, inside the dwell
            plan = stage.plan_id
            value_now = float(self.detect(stage.at(now)[None, :])[0]) if stage.t_end <= now else None
            self.count += 1                                  # acquisitions started, counted inside the dwell
            await self.det_count.write(self.count)
            while (remaining := t_end - time.monotonic()) > 0:
                await _nap(remaining)
            if value_now is None or stage.plan_id != plan:   # it was moving, or moved meanwhile
                value_now = float(self.detect(stage.at(time.monotonic())[None, :])[0])
            await self.det_val.write(value_now)
            return value

        # ------------------------------------------------------------------------- list mode

        @list_start.putter
        async def list_start(self, instance: Any, value: int) -> int:
            if not value:
                return value
            if self.aborted:
                raise ValueError("ABORT is set: clear it (put 0) before starting a list")
            if self.list_task is not None and not self.list_task.done():
                raise ValueError("a list scan is already running")
            n = int(self.list_n.value)
            xs = np.asarray(self.list_x.value, dtype=float)
            ys = np.asarray(self.list_y.value, dtype=float)
            if not 0 < n <= min(len(xs), len(ys)):
                raise ValueError(f"LIST:N = {n} must be between 1 and the number of positions written")
            positions = np.array([self.clip(y, x) for y, x in zip(ys[:n], xs[:n])])
            flags = np.zeros(n, dtype=np.int64)
            given = np.asarray(self.list_fly.value, dtype=np.int64)[:n]
            flags[:len(given)] = given
            try:
                flights = segments_from_flags(self.pixel(positions), flags)
            except InputError as exc:
                raise ValueError(f"LIST:FLY: {exc}") from None
            if flights and not self.sim.can_fly:
                raise ValueError("LIST:FLY flags points to fly, but this stage steps (its time model has "
                                 "raster='step'); clear the flags")
            await self.list_progress.write(0)
            await self.list_busy.write(1)
            await self.dmov.write(0)
            self.list_task = asyncio.get_running_loop().create_task(self.run_list(positions, flights))
            return value

        async def run_list(self, positions: np.ndarray, flights: list[Any]) -> None:
            stage, n, size = self.stage, len(positions), self.max_points
            start = stage.at(time.monotonic())
            steps = np.diff(np.vstack([start, positions]), axis=0)
            timing = self.sim.time_model
            durations = charge_flights(timing.durations(steps), flights, timing, self.sim.grid)
            finish = np.cumsum(durations) * stage.scale
            vals, xr, yr = np.zeros(size), np.zeros(size), np.zeros(size)
            times, counts = np.zeros(size), np.zeros(size, dtype=np.int64)
            t0, done = time.monotonic(), 0
            try:
                while done < n and not self.aborted:
                    elapsed = time.monotonic() - t0
                    k = int(np.searchsorted(finish, elapsed, side="right"))
                    if k > done:
                        vals[done:k] = self.detect(positions[done:k])
                        yr[done:k], xr[done:k] = positions[done:k, 0], positions[done:k, 1]
                        times[done:k] = finish[done:k]
                        counts[done:k] = self.count + 1 + np.arange(k - done)
                        self.count += k - done
                        done = k
                        for prop, arr in ((self.list_val, vals), (self.list_xrbv, xr), (self.list_yrbv, yr),
                                          (self.list_times, times), (self.list_count, counts)):
                            await prop.write(arr.copy())
                        await self.det_val.write(float(vals[done - 1]))
                        await self.det_count.write(self.count)
                        await self.x_rbv.write(float(xr[done - 1]))
                        await self.y_rbv.write(float(yr[done - 1]))
                        await self.list_progress.write(done)
                    if done >= n:
                        break
                    elapsed = time.monotonic() - t0
                    wait = min(max(_PUBLISH_PERIOD, finish[done] - elapsed), finish[-1] - elapsed)
                    await asyncio.sleep(max(wait, 0.0))
            finally:
                stage.place(positions[done - 1] if done else start, time.monotonic())
                self.published = self.rbv_published = stage.plan_id
                await self.x_rbv.write(float(stage.target[1]))
                await self.y_rbv.write(float(stage.target[0]))
                await self.dmov.write(1)
                await self.list_busy.write(0)

        # ------------------------------------------------------------------------- abort

        @abort.putter
        async def abort(self, instance: Any, value: int) -> int:
            self.aborted = bool(value)
            if self.aborted:
                self.stage.stop(time.monotonic())
            return value

    return BeamlineIOC


def build_ioc(
    image: np.ndarray,
    grid: ScanGrid,
    *,
    prefix: str = DEFAULT_PREFIX,
    noise: Any = None,
    seed: int | None = None,
    dwell: float = 0.01,
    speed: float = 100.0,
    settle: float = 0.005,
    timing: Any = None,
    time_scale: float = 1.0,
    start: Any = None,
    max_points: int = DEFAULT_MAX_POINTS,
    early_completion: bool = False,
) -> Any:
    """The IOC object (a caproto ``PVGroup``) for ``image`` on ``grid``; serve ``ioc.pvdb`` with caproto.

    With ``early_completion`` a setpoint put completes as soon as the move starts (as with motors that do not
    support put-callback), so only the done-moving PV tells when the stage has stopped. ``timing``: a
    :class:`~fastflow.timing.TimeModel`, a preset name or a JSON file (:func:`~fastflow.timing.load_time_model`);
    when given, ``dwell``, ``speed`` and ``settle`` are ignored."""
    sim = SimulatedInstrument(image, grid, noise=noise, seed=seed, dwell=dwell, speed=speed, settle=settle,
                              timing=load_time_model(timing), start=start)
    if not np.isfinite(time_scale) or time_scale < 0:
        raise InputError(f"time scale must be a finite number >= 0; got {time_scale!r}")
    if int(max_points) < 1:
        raise InputError(f"max points must be >= 1; got {max_points!r}")
    (y0, y1, x0, x1), (dy, dx) = grid.extent, grid.pixel_size
    limits = Limits(x_min=x0 - dx / 2, x_max=x1 + dx / 2, y_min=y0 - dy / 2, y_max=y1 + dy / 2)
    stage = _Stage(sim.position, sim.time_model, float(time_scale))
    cls = _make_group_class(int(max_points), (float(stage.target[0]), float(stage.target[1])))
    return cls(prefix=prefix, sim=sim, stage=stage, limits=limits, dwell=sim.dwell,
               early_completion=bool(early_completion))


@functools.cache
def _write_event_class() -> type:
    """caproto's asyncio event, except that ``wait(timeout)`` returns True at once when the event is set;
    otherwise it waits as caproto's does (``asyncio.wait_for``, then the state: False after a timeout)."""
    from caproto.asyncio.server import AsyncioEvent

    class WriteEvent(AsyncioEvent):
        async def wait(self, timeout: float | None = None) -> bool:
            if self.is_set():
                return True
            return await super().wait(timeout)

    return WriteEvent


def _tune_caproto_server() -> None:
    """Two changes to caproto's asyncio server (1.3) that take latency out of each request, not behaviour.

    - TCP_NODELAY on each client socket. caproto binds its listening socket with ``proto=0``, so asyncio's
      automatic TCP_NODELAY (applied only to sockets whose ``proto`` is ``IPPROTO_TCP``) never happens; Nagle's
      algorithm then holds back the second of two responses until the client's delayed ACK, 40 ms later. That
      is where the 40-48 ms put-completion delay with monitors comes from, and it also hits two requests sent
      in one round trip.
    - Before each read, caproto waits (up to ``WRITE_LOCK_TIMEOUT``) for the circuit's write in progress to
      finish, through ``asyncio.wait_for`` even when no write is in progress; that costs a task and two turns
      of the event loop per read (about 0.1-0.2 ms here). Each circuit gets a :func:`_write_event_class` instead.
    """
    from caproto.asyncio import server as aserver

    circuit, context = aserver.VirtualCircuit, aserver.Context
    if getattr(context, "_fastflow_tuned", False):
        return
    original_handler, original_init = context.tcp_handler, circuit.__init__

    async def tcp_handler(self: Any, client: Any, addr: Any) -> Any:
        sock = client.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await original_handler(self, client, addr)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.write_event = _write_event_class()()

    context.tcp_handler = tcp_handler
    circuit.__init__ = init
    context._fastflow_tuned = True


# ------------------------------------------------------------------------------------------ command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastflow.instruments.ioc",
        description="Serve a simulated scanning beamline (stage + detector over a sample image) over EPICS "
        "Channel Access. Ports come from EPICS_CAS_SERVER_PORT etc.; it binds to EPICS_CAS_INTF_ADDR_LIST "
        "(default 127.0.0.1).",
    )
    p.add_argument("--sample", required=True, help="bundled sample name or image file (.npy, .tif, .png, ...)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="PV prefix (default %(default)s)")
    p.add_argument("--noise", default=None, help="'none', 'poisson:PEAK' or 'gaussian:SIGMA'")
    p.add_argument("--seed", type=int, default=None, help="seed of the noise generator")
    p.add_argument("--pixel-size", type=float, nargs="+", default=[1.0], metavar="D",
                   help="pixel size: one value, or dy dx (default 1)")
    p.add_argument("--origin", type=float, nargs=2, default=[0.0, 0.0], metavar=("Y", "X"),
                   help="physical position of pixel (0, 0) (default 0 0)")
    p.add_argument("--units", default="px", help="physical units of the grid (default px)")
    p.add_argument("--dwell", type=float, default=0.01, help="seconds per acquisition (default 0.01)")
    p.add_argument("--speed", type=float, default=100.0, help="stage speed, units per second (default 100)")
    p.add_argument("--settle", type=float, default=0.005, help="seconds of settling after a move (default 0.005)")
    p.add_argument("--timing", default=None, metavar="MODEL",
                   help="time model: a preset (`fastflow timing presets`) or a JSON file; overrides --dwell, "
                   "--speed and --settle (a model with raster 'fly' flies the LIST:FLY segments)")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="multiply every simulated sleep by this (e.g. 0.01 runs 100x faster; default 1)")
    p.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS,
                   help="length of the list-mode waveforms (default %(default)s)")
    p.add_argument("--early-completion", action="store_true",
                   help="complete setpoint puts when the move starts, not when it ends (motors without "
                   "put-callback support): clients must wait for done-moving")
    p.add_argument("--mode", choices=("point", "list"), default="point",
                   help="mode written into --write-pv-map (the IOC serves both; default point)")
    p.add_argument("--write-pv-map", default=None, metavar="FILE",
                   help="write the matching PV map (.toml or .yaml) and go on serving")
    return p


def _grid_from_args(args: argparse.Namespace, shape: tuple[int, int]) -> ScanGrid:
    size = args.pixel_size
    if len(size) not in (1, 2):
        raise InputError(f"--pixel-size takes one or two values; got {len(size)}")
    return ScanGrid(shape, pixel_size=tuple(size) * (2 // len(size)), origin=tuple(args.origin), units=args.units)


def main(argv: list[str] | None = None) -> int:
    """Run the IOC until interrupted. Returns a process exit status (2 for bad input)."""
    from fastflow.images import load_sample

    args = _parser().parse_args(argv)
    try:
        image, _meta = load_sample(args.sample)
        grid = _grid_from_args(args, image.shape)
        ioc = build_ioc(image, grid, prefix=args.prefix, noise=args.noise, seed=args.seed, dwell=args.dwell,
                        speed=args.speed, settle=args.settle, timing=args.timing, time_scale=args.time_scale,
                        max_points=args.max_points, early_completion=args.early_completion)
        if args.write_pv_map:
            path = pv_map_for(args.prefix, grid, mode=args.mode).save(args.write_pv_map)
            print(f"wrote PV map {path}", flush=True)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from caproto.server import run

    _tune_caproto_server()
    interfaces = os.environ.get("EPICS_CAS_INTF_ADDR_LIST", "").split() or ["127.0.0.1"]
    port = os.environ.get("EPICS_CAS_SERVER_PORT", "5064")
    print(f"serving {len(ioc.pvdb)} PVs with prefix {args.prefix!r} over a {grid.shape[0]}x{grid.shape[1]} "
          f"sample on {','.join(interfaces)}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        run(ioc.pvdb, interfaces=interfaces, log_pv_names=False)
    return 0


# ------------------------------------------------------------------------------------------ test helper


def free_port(kind: int = socket.SOCK_STREAM, *, udp_too: bool = False) -> int:
    """A port on 127.0.0.1 that is free now (TCP, or UDP with ``kind=SOCK_DGRAM``; both with ``udp_too``)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not udp_too:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise InstrumentError("found no free loopback port for the IOC")


def loopback_env(server_port: int, repeater_port: int) -> dict[str, str]:
    """EPICS variables that keep a CA server and its clients on 127.0.0.1 with the given ports."""
    return {
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_SERVER_PORT": str(server_port),
        "EPICS_CAS_SERVER_PORT": str(server_port),
        "EPICS_CA_REPEATER_PORT": str(repeater_port),
        "EPICS_CAS_BEACON_PORT": str(repeater_port),
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CA_MAX_ARRAY_BYTES": "10000000",
    }


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None,
                  host: str = "127.0.0.1") -> float:
    """Wait until ``host:port`` accepts TCP connections; returns the seconds waited."""
    t0 = time.monotonic()
    while True:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return time.monotonic() - t0
        if process is not None and process.poll() is not None:
            raise InstrumentError(f"the IOC exited with status {process.returncode} before listening on {port}")
        if time.monotonic() - t0 > timeout:
            raise InstrumentError(f"the IOC did not listen on {host}:{port} within {timeout:g} s")
        time.sleep(0.02)


def _death_signal() -> Any:
    """``preexec_fn`` that ties a child to this process (Linux, main thread only: the kernel signals the child
    when the *thread* that started it ends)."""
    import threading

    return _die_with_parent if threading.current_thread() is threading.main_thread() else None


def _die_with_parent() -> None:
    """In the child (Linux): get SIGTERM when the parent dies, so that a crashed test leaves no IOC behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class IocHandle:
    """A simulated-beamline IOC running as a subprocess (see :func:`start_ioc`).

    Attributes
    ----------
    env : dict
        The EPICS variables a client must use (set them in ``os.environ`` before the first CA call).
    pv_map : PvMap
        The matching PV map (point mode; ``pv_map_for(prefix, grid, mode="list")`` for list mode).
    grid : ScanGrid
    process : subprocess.Popen
    log : pathlib.Path
        The IOC's combined stdout/stderr.
    """

    def __init__(self, command: list[str], env: dict[str, str], full_env: dict[str, str], grid: ScanGrid,
                 prefix: str, log: Path, timeout: float, repeater: bool = True) -> None:
        self.command, self.env, self._full_env = command, env, full_env
        self.grid, self.prefix, self.log, self.timeout = grid, prefix, log, timeout
        self.port = int(env["EPICS_CAS_SERVER_PORT"])
        self.pv_map = pv_map_for(prefix, grid)
        self.process: subprocess.Popen | None = None
        self.repeater: subprocess.Popen | None = None
        if repeater:
            # a CA repeater relays the IOC's beacons to clients, so that they reconnect at once after a restart
            # (without one, libca finds a restarted server only at its next, backed-off, search)
            with open(self.log, "ab") as out:
                self.repeater = subprocess.Popen(
                    [sys.executable, "-c", "from caproto.sync.repeater import run; run('127.0.0.1')"],
                    env=self._full_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    preexec_fn=_death_signal())
        self.start()

    def start(self) -> IocHandle:
        """(Re)start the IOC on the same ports and wait until it listens."""
        if self.process is not None and self.process.poll() is None:
            return self
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.command, env=self._full_env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=_death_signal())
        try:
            wait_for_port(self.port, self.timeout, self.process)
        except InstrumentError as exc:
            self.kill()
            raise InstrumentError(f"{exc}; IOC log {self.log}:\n{self.log_text()[-2000:]}") from None
        return self

    restart = start

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the IOC (SIGTERM, then SIGKILL after ``timeout``) and its CA repeater."""
        if self.running:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.repeater is not None and self.repeater.poll() is None:
            self.repeater.terminate()
            try:
                self.repeater.wait(timeout)
            except subprocess.TimeoutExpired:
                self.repeater.kill()
                self.repeater.wait(5)

    def kill(self) -> None:
        """Kill the IOC at once (SIGKILL), as a crash would."""
        if self.running:
            self.process.kill()
            self.process.wait(5)

    def pause(self) -> None:
        """Freeze the IOC (SIGSTOP): it keeps its sockets but answers nothing until :meth:`resume`."""
        if self.running:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze the IOC (SIGCONT)."""
        if self.running:
            os.kill(self.process.pid, signal.SIGCONT)

    def __enter__(self) -> IocHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_ioc(
    sample: Any,
    prefix: str = DEFAULT_PREFIX,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    repeater: bool = True,
    pixel_size: Any = 1.0,
    origin: Any = (0.0, 0.0),
    units: str = "px",
    **opts: Any,
) -> IocHandle:
    """Launch the simulated-beamline IOC as a subprocess on free loopback ports and wait until it listens.

    Parameters
    ----------
    sample : str, path or array
        A bundled sample name, an image file, or a 2-D array (saved to a temporary ``.npy``).
    prefix : str
    env : dict, optional
        EPICS variables to use instead of fresh free ports (e.g. ``handle.env`` of an earlier IOC, so that a
        client process that already initialised CA can reach the new one).
    timeout : float
        Seconds to wait for the IOC's TCP port.
    repeater : bool
        Also run a CA repeater (caproto's, on 127.0.0.1) on the repeater port; it relays the IOC's beacons so
        that clients reconnect at once after :meth:`IocHandle.restart`, and silences libca's complaint about
        a missing ``caRepeater``. Start the IOC before the client's first CA call so that it registers.
    pixel_size, origin, units
        The IOC's grid.
    **opts
        ``noise``, ``seed``, ``dwell``, ``speed``, ``settle``, ``timing``, ``time_scale``, ``max_points``, ``mode``,
        ``write_pv_map``, ``early_completion`` (bool): the options of :func:`main` (underscores for dashes).

    Returns
    -------
    IocHandle
        With ``.env``, ``.pv_map``, ``.grid``, ``.stop()``, ``.kill()``, ``.restart()``, ``.pause()``,
        ``.resume()``; usable as a context manager.
    """
    from fastflow.images import load_sample

    tmp = Path(tempfile.mkdtemp(prefix="fastflow-ioc-"))
    if isinstance(sample, np.ndarray):
        path = tmp / "sample.npy"
        np.save(path, sample)
        sample = str(path)
    image, _meta = load_sample(sample)
    size = np.broadcast_to(np.asarray(pixel_size, dtype=float), (2,))
    grid = ScanGrid(image.shape, pixel_size=tuple(size), origin=tuple(origin), units=units)
    if env is None:
        env = loopback_env(free_port(udp_too=True), free_port(socket.SOCK_DGRAM))
    env = {k: str(v) for k, v in env.items()}
    command = [sys.executable, "-m", "fastflow.instruments.ioc", "--sample", str(sample), "--prefix", prefix,
               "--pixel-size", *map(repr, size.tolist()), "--origin", *map(repr, map(float, origin)),
               "--units", units]
    for key, value in opts.items():
        if value is None:
            continue
        if key not in ("noise", "seed", "dwell", "speed", "settle", "timing", "time_scale", "max_points",
                       "mode", "write_pv_map", "early_completion"):
            raise InputError(f"start_ioc got an unknown option {key!r}")
        if isinstance(value, bool):
            command += [f"--{key.replace('_', '-')}"] if value else []
            continue
        command += [f"--{key.replace('_', '-')}", str(value)]
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    return IocHandle(command, env, full_env, grid, prefix, tmp / "ioc.log", timeout, repeater)


if __name__ == "__main__":
    sys.exit(main())
