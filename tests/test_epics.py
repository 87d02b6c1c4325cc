"""The EPICS instrument against the simulated-beamline IOC: a real caproto subprocess on 127.0.0.1, real pyepics.

One IOC (one pair of free loopback ports) serves the whole module; tests that kill it restart it on the same
ports, because pyepics reads the EPICS environment once, when Channel Access starts in this process.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("epics")
pytest.importorskip("caproto")

from fastflow.errors import InputError, InstrumentError  # noqa: E402
from fastflow.grid import ScanGrid  # noqa: E402
from fastflow.instruments.base import Instrument  # noqa: E402
from fastflow.instruments.ioc import pv_map_for, start_ioc  # noqa: E402
from fastflow.instruments.pvmap import Limits, PvMap  # noqa: E402

PREFIX = "FFTEST:"
TIMEOUTS = {"connect": 5.0, "move": 2.0, "acquire": 2.0}
IMAGE = np.random.default_rng(7).random((32, 32)).round(6)


@pytest.fixture(scope="module")
def ioc(tmp_path_factory):
    path = tmp_path_factory.mktemp("ioc") / "sample.npy"
    np.save(path, IMAGE)
    handle = start_ioc(str(path), PREFIX, time_scale=0.02, dwell=0.01, speed=100.0, settle=0.005,
                       write_pv_map=str(path.with_name("map.toml")))
    os.environ.update(handle.env)  # before this process's first Channel Access call
    yield handle
    handle.stop()


@pytest.fixture
def live(ioc):
    """The IOC, running and with ABORT cleared."""
    if not ioc.running:
        ioc.restart()
    yield ioc
    if ioc.running:
        ioc.resume()
        _put(PREFIX + "ABORT", 0)


def _map(ioc, mode="point", **kw):
    return pv_map_for(PREFIX, ioc.grid, mode=mode, timeouts=TIMEOUTS, **kw)


def _instrument(ioc, mode="point", **kw):
    from fastflow.instruments.epics import EpicsInstrument

    return EpicsInstrument(ioc.grid, _map(ioc, mode, **kw))


def _get(name):
    from fastflow.instruments.epics import read_pvs

    return read_pvs([name])[0]


def _put(name, value):
    from fastflow.instruments.epics import write_pv

    write_pv(name, value)


def _points(n, seed):
    return np.random.default_rng(seed).integers(0, 32, (n, 2))


# ---------------------------------------------------------------------------------------- PV map


def test_pv_map_round_trip_and_validation(tmp_path):
    grid = ScanGrid((32, 32), pixel_size=0.5, origin=(1.0, 2.0), units="um")
    pv_map = pv_map_for("BL1:", grid, mode="list", extra_channels=True)
    assert pv_map.pv("stage.x_setpoint") == "BL1:X:SP"
    assert pv_map.channels == ("value", "count")
    assert pv_map.limits == Limits(x_min=1.75, x_max=17.75, y_min=0.75, y_max=16.75)
    assert PvMap.load(pv_map.save(tmp_path / "map.toml")) == pv_map
    assert PvMap.load(pv_map.save(tmp_path / "map.yaml")) == pv_map

    data = pv_map.to_dict()
    with pytest.raises(InputError, match="unknown key 'x_setpiont'"):
        PvMap.from_dict({**data, "stage": {**data["stage"], "x_setpiont": "X"}})
    with pytest.raises(InputError, match="needs these PVs.*detector.trigger"):
        PvMap.from_dict({**data, "mode": "point", "detector": {"value": "$(P)DET:VAL"}, "list": {}})
    with pytest.raises(InputError, match="limits are inverted: x_min = 5 > x_max = 1"):
        PvMap.from_dict({**data, "limits": {"x_min": 5, "x_max": 1, "y_min": 0, "y_max": 1}})
    with pytest.raises(InputError, match=r"\[limits\].*required"):
        PvMap.from_dict({k: v for k, v in data.items() if k != "limits"})
    with pytest.raises(InputError, match="mode must be"):
        PvMap.from_dict({**data, "mode": "fly"})


def test_ioc_writes_its_pv_map(ioc):
    path = ioc.command[ioc.command.index("--write-pv-map") + 1]  # asked for by the module fixture
    assert PvMap.load(path) == pv_map_for(PREFIX, ioc.grid)


# ---------------------------------------------------------------------------------------- measuring


@pytest.mark.parametrize("mode", ["point", "list"])
def test_values_equal_the_image_at_the_requested_pixels(live, mode):
    inst = _instrument(live, mode, extra_channels=True)
    assert isinstance(inst, Instrument)
    idx = _points(40, seed=1)
    m = inst.measure(idx)
    assert m.values.shape == (40, 2)
    np.testing.assert_array_equal(m.values[:, 0], IMAGE[idx[:, 0], idx[:, 1]])
    assert np.all(np.diff(m.values[:, 1]) == 1)  # the IOC's acquisition counter: one per point
    np.testing.assert_array_equal(m.positions, live.grid.to_position(idx))  # readbacks
    assert np.all(np.diff(m.times) > 0) and m.times[0] > 0
    steps = np.diff(np.vstack([inst.describe()["start"], m.positions]), axis=0)
    assert inst.path_length == pytest.approx(np.hypot(*steps.T).sum())
    assert inst.elapsed >= m.times[-1]
    assert inst.measure(np.empty((0, 2), int)).values.shape == (0, 2)
    d = inst.describe()
    assert d["kind"] == "epics" and d["mode"] == mode and d["pvs"]["detector.value"] == PREFIX + "DET:VAL"


def test_positions_outside_the_limits_are_refused_before_anything_moves(live):
    from fastflow.instruments.epics import EpicsInstrument

    inst = _instrument(live)
    inst.measure([[3, 4]])
    before = [_get(PREFIX + n) for n in ("X:SP", "Y:SP", "DET:COUNT")]
    narrow = dataclasses.replace(_map(live), limits=Limits(x_min=0, x_max=20, y_min=0, y_max=31))
    inst = EpicsInstrument(live.grid, narrow)
    with pytest.raises(InputError, match=r"1 of 3 positions lie outside the stage soft limits.*\(5, 25\)"):
        inst.measure([[1, 1], [2, 2], [5, 25]])
    assert [_get(PREFIX + n) for n in ("X:SP", "Y:SP", "DET:COUNT")] == before
    assert inst.n_points == 0


@pytest.mark.parametrize("mode", ["point", "list"])
def test_abort_pv_stops_the_batch_with_the_partial_points(live, mode):
    from fastflow.instruments.epics import InstrumentAborted

    inst = _instrument(live, mode)
    idx = _points(400, seed=2)

    timer = threading.Timer(0.3, _put, (PREFIX + "ABORT", 1))
    timer.start()
    with pytest.raises(InstrumentAborted, match="aborted by FFTEST:ABORT") as info:
        inst.measure(idx)
    timer.join()
    part = info.value.partial
    assert 0 < len(part) < len(idx)
    np.testing.assert_array_equal(part.values[:, 0], IMAGE[idx[: len(part), 0], idx[: len(part), 1]])
    assert inst.n_points == len(part)
    with pytest.raises(InstrumentAborted, match="is set; clear it"):
        inst.measure(idx[:2])
    inst.clear_abort()
    assert len(inst.measure(idx[:2])) == 2


@pytest.mark.parametrize("mode", ["point", "list"])
def test_ioc_killed_mid_batch_then_restarted(live, mode):
    inst = _instrument(live, mode)
    idx = _points(400, seed=3)
    timer = threading.Timer(0.4, live.kill)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(InstrumentError, match=rf"PV {PREFIX}\S+ .*did not answer within 2 s.*last point") as info:
        inst.measure(idx)
    took = time.monotonic() - t0
    timer.join()
    assert took < 0.4 + 2 * 2.0 + 1.0  # the kill, then at most a move and an acquisition timeout
    part = info.value.partial
    assert 0 < len(part) < len(idx)
    np.testing.assert_array_equal(part.values[:, 0], IMAGE[idx[: len(part), 0], idx[: len(part), 1]])

    live.restart()
    t1 = time.monotonic()
    again = _instrument(live, mode)
    rest = idx[len(part):][:30]
    m = again.measure(rest)
    np.testing.assert_array_equal(m.values[:, 0], IMAGE[rest[:, 0], rest[:, 1]])
    assert time.monotonic() - t1 < 10


def test_pvs_on_several_servers_get_the_plain_sequence(live, monkeypatch):
    """Reads are only sent along with puts when one server answers them all, in order; otherwise each point is
    move, done-moving/abort, trigger, read, one after the other (here: the server check made to say no)."""
    from fastflow.instruments.epics import EpicsInstrument

    combined = []
    original = EpicsInstrument._read_then_put
    monkeypatch.setattr(EpicsInstrument, "_read_then_put",
                        lambda self, *a, **k: combined.append(a) or original(self, *a, **k))
    inst = _instrument(live, extra_channels=True)
    idx = _points(12, seed=11)
    assert inst._one_server(["stage.x_setpoint", "detector.trigger", "abort"])  # the simulated beamline: one IOC
    first = inst.measure(idx)
    assert len(combined) == 2 * len(idx) - 1    # pipelined: every move but the first, and every trigger
    combined.clear()
    monkeypatch.setattr(EpicsInstrument, "_one_server", lambda self, roles: False)
    m = inst.measure(idx)
    assert combined == []
    for got in (first, m):
        np.testing.assert_array_equal(got.values[:, 0], IMAGE[idx[:, 0], idx[:, 1]])
        np.testing.assert_array_equal(got.positions, live.grid.to_position(idx))
        assert np.diff(got.values[:, 1]).tolist() == [1] * (len(idx) - 1)   # one acquisition per point


def test_a_stage_whose_puts_complete_early_is_waited_for(ioc):
    """Motors without put-callback support complete a setpoint put when the move starts: only done-moving says
    when the stage has stopped. The first trigger sent with the done-moving read (one round trip) finds the
    stage moving: it is discarded with a warning, and from then on every trigger waits for done-moving."""
    ioc.kill()
    early = start_ioc(IMAGE, PREFIX, env=ioc.env, repeater=False, early_completion=True, time_scale=1.0,
                      dwell=0.001, speed=500.0, settle=0.002)
    try:
        inst = _instrument(early, extra_channels=True)
        idx = np.array([[0, 0], [31, 31], [0, 31], [31, 0], [16, 16], [2, 29]])
        with pytest.warns(RuntimeWarning, match="completes its puts before the move ends"):
            m = inst.measure(idx)
        np.testing.assert_array_equal(m.values[:, 0], IMAGE[idx[:, 0], idx[:, 1]])  # never measured in motion
        np.testing.assert_array_equal(m.positions, early.grid.to_position(idx))
        # the stage starts at (0, 0): the first move is the second point's, whose first trigger was discarded
        assert np.diff(m.values[:, 1]).tolist() == [2] + [1] * (len(idx) - 2)
    finally:
        early.stop()
        ioc.restart()


def test_a_move_during_the_dwell_is_measured_where_the_stage_ends(ioc):
    """The IOC reads the sample at the start of the dwell when the stage is at rest (hiding the work in the
    dwell), but a setpoint that arrives during the dwell moves the stage: the value is then read again at
    the end of the dwell, where the stage is."""
    import epics

    ioc.kill()
    slow = start_ioc(IMAGE, PREFIX, env=ioc.env, repeater=False, time_scale=1.0, dwell=0.5, speed=1e4, settle=0.0)
    try:
        pvs = {name: epics.PV(PREFIX + name, auto_monitor=False) for name in ("X:SP", "Y:SP", "DET:TRIG", "DET:VAL")}
        assert all(pv.wait_for_connection(5.0) for pv in pvs.values())
        (ya, xa), (yb, xb) = slow.grid.to_position(np.array([[3, 4], [20, 27]]))
        pvs["Y:SP"].put(ya, wait=True)
        pvs["X:SP"].put(xa, wait=True)
        pvs["DET:TRIG"].put(1, wait=True)
        assert pvs["DET:VAL"].get(use_monitor=False) == pytest.approx(IMAGE[3, 4])   # at rest: as before
        done = []
        pvs["DET:TRIG"].put(1, use_complete=True, callback=lambda **kw: done.append(True))
        time.sleep(0.1)                                                                # inside the dwell
        pvs["Y:SP"].put(yb, wait=True)
        pvs["X:SP"].put(xb, wait=True)
        deadline = time.monotonic() + 5.0
        while not done and time.monotonic() < deadline:
            time.sleep(0.01)
        assert done
        assert pvs["DET:VAL"].get(use_monitor=False) == pytest.approx(IMAGE[20, 27])
    finally:
        slow.stop()
        ioc.restart()


def test_readbacks_reach_the_target_when_the_travel_ends_and_done_moving_after_the_settle(ioc):
    """The simulated stage publishes its readbacks when the travel ends (the settle that follows is spent
    at the target) and done-moving when the settle ends; the setpoint put completes with done-moving."""
    ioc.kill()
    slow = start_ioc(IMAGE, PREFIX, env=ioc.env, repeater=False, time_scale=1.0, dwell=0.001, speed=1e4,
                     settle=0.6)
    try:
        (_, x0), (_, x1) = slow.grid.to_position(np.array([[0, 0], [0, 25]]))
        assert _get(PREFIX + "X:RBV") == pytest.approx(x0)
        mover = threading.Thread(target=_put, args=(PREFIX + "X:SP", x1))   # returns on put completion
        mover.start()
        time.sleep(0.2)                                                   # travel (2.5 ms) over, settling
        assert _get(PREFIX + "X:RBV") == pytest.approx(x1)
        assert _get(PREFIX + "DMOV") == 0 and mover.is_alive()
        mover.join(5.0)
        assert not mover.is_alive() and _get(PREFIX + "DMOV") == 1
    finally:
        slow.stop()
        ioc.restart()


def test_a_short_freeze_is_ridden_through(live):
    inst = _instrument(live)
    idx = _points(150, seed=4)

    def freeze():
        live.pause()
        time.sleep(0.8)  # below the 2 s timeouts
        live.resume()

    timer = threading.Timer(0.2, freeze)
    begin = inst.elapsed
    timer.start()
    m = inst.measure(idx)
    timer.join()
    np.testing.assert_array_equal(m.values[:, 0], IMAGE[idx[:, 0], idx[:, 1]])
    # the freeze happened during the batch (on a loaded machine possibly before its first point)
    assert np.diff(np.concatenate([[begin], m.times])).max() > 0.7


def test_a_channel_keeps_the_pv_type_and_length_only_while_connected(live):
    """The element count and type of each channel are cached (they are asked for on every request) and forgotten
    when the connection drops: a restarted server may serve the PV differently."""
    from epics import dbr

    inst = _instrument(live, "list")
    pv = inst._pvs["list.x_positions"]
    assert (pv.element_count, pv.field_type) == (2000, dbr.DOUBLE) and pv.native == (2000, dbr.DOUBLE)
    live.kill()
    deadline = time.monotonic() + 5
    while pv.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pv.connected and pv.native is None
    live.restart()
    assert pv.wait(5) and pv.element_count == 2000
    m = inst.measure([[1, 2], [3, 4]])
    np.testing.assert_array_equal(m.values[:, 0], IMAGE[[1, 3], [2, 4]])


def test_scalar_puts_take_the_type_of_the_pv(live):
    from fastflow.instruments.epics import read_pvs, write_pv

    for value, expected in ((7.0, 7), (np.int64(3), 3), (5.9, 5), (True, 1)):  # LIST:N is an integer PV
        write_pv(PREFIX + "LIST:N", value)
        assert _get(PREFIX + "LIST:N") == expected
    write_pv(PREFIX + "LIST:X", np.arange(4) + 0.25)  # a waveform: the array path
    np.testing.assert_array_equal(read_pvs([PREFIX + "LIST:X"])[0][:4], np.arange(4) + 0.25)


def test_request_boxes_and_batches():
    from fastflow.instruments.epics import _Batch, _Box

    box = _Box()
    assert not box.answered and not box.wait(0.01)
    threading.Timer(0.05, box.done).start()
    assert box.wait(2.0) and box.answered and box.wait(0)
    box.done()  # a repeated call changes nothing
    assert box.wait(0)

    batch = _Batch(2)
    assert len(batch) == 0 and len(batch.measurement()) == 0
    batch.add_point([1.0, 10.0], 0.5, 1.5, 0.1)
    batch.add(np.array([[2.0, 20.0], [3.0, 30.0]]), np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0.2, 0.3]))
    batch.add_point([4.0, 40.0], 5.0, 6.0, 0.4)
    m = batch.measurement()
    assert len(batch) == 4
    np.testing.assert_array_equal(m.values, [[1, 10], [2, 20], [3, 30], [4, 40]])
    np.testing.assert_array_equal(m.positions, [[0.5, 1.5], [1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(m.times, [0.1, 0.2, 0.3, 0.4])


def test_the_tuned_ioc_write_event_waits_only_while_a_write_is_in_progress(monkeypatch):
    import asyncio

    from fastflow.instruments.ioc import _write_event_class

    async def check():
        event = _write_event_class()()
        t0 = time.monotonic()
        assert await event.wait(timeout=0.05) is False and time.monotonic() - t0 >= 0.04  # clear: waits
        asyncio.get_running_loop().call_later(0.02, event.set)
        assert await event.wait(timeout=2.0) is True
        wait_for = asyncio.wait_for

        def refuse(*args, **kwargs):
            raise AssertionError("a set event must not wait through asyncio.wait_for")

        monkeypatch.setattr(asyncio, "wait_for", refuse)
        assert await event.wait(timeout=2.0) is True  # set: returns at once
        monkeypatch.setattr(asyncio, "wait_for", wait_for)

    asyncio.run(check())


def test_dry_run_writes_nothing(live):
    from fastflow.instruments.epics import EpicsInstrument

    _instrument(live).measure([[2, 3]])
    names = ("X:SP", "Y:SP", "DET:TRIG", "DET:COUNT", "LIST:N", "LIST:PROGRESS", "ABORT")
    before = [_get(PREFIX + n) for n in names]
    for mode in ("point", "list"):
        inst = EpicsInstrument(live.grid, _map(live, mode), dry_run=True)
        m = inst.measure([[10, 11], [20, 21]])
        np.testing.assert_array_equal(m.positions, [[2, 3], [2, 3]])  # where the stage is: it did not move
        assert m.values[0, 0] == IMAGE[2, 3]
        report = inst.check()
        assert report["stage.x_readback"] == {"pv": PREFIX + "X:RBV", "connected": True, "value": 3.0}
        with pytest.raises(InstrumentError, match="dry run"):
            inst.clear_abort()
    assert [_get(PREFIX + n) for n in names] == before


def test_unreachable_pv_fails_to_connect_naming_it(live):
    from fastflow.instruments.epics import EpicsInstrument

    data = _map(live).to_dict()
    data["detector"]["value"] = "$(P)NO:SUCH:PV"
    data["timeouts"]["connect"] = 0.5
    with pytest.raises(InstrumentError, match="FFTEST:NO:SUCH:PV"):
        EpicsInstrument(live.grid, data)


def test_keyboard_interrupt_stops_a_list_cleanly_with_the_partial_points(live):
    import signal

    inst = _instrument(live, "list")
    idx = _points(400, seed=5)

    def interrupt_mid_list():
        # Ctrl-C once the list runs (a fixed delay raced the list on a busy machine)
        deadline = time.monotonic() + 30
        while _get(PREFIX + "LIST:BUSY") != 1 or not 0 < _get(PREFIX + "LIST:PROGRESS") < 300:
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    # Python's own Ctrl-C handler, whatever an earlier test of the session left installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Thread(target=interrupt_mid_list)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt) as info:
            inst.measure(idx)
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    part = info.value.partial
    assert 0 < len(part) < len(idx)
    np.testing.assert_array_equal(part.values[:, 0], IMAGE[idx[: len(part), 0], idx[: len(part), 1]])
    assert _get(PREFIX + "LIST:BUSY") == 0 and _get(PREFIX + "ABORT") == 0  # stopped, and the abort cleared
    assert len(inst.measure(idx[:3])) == 3


def test_scan_killed_mid_batch_keeps_the_partial_batch_and_resumes(live, tmp_path):
    from fastflow.sampling.registry import make_sampler
    from fastflow.scan import StopRules, run_scan
    from fastflow.store import ScanStore

    grid = live.grid
    store = ScanStore.create(tmp_path / "run", grid)

    def kill_mid_batch():
        # this batch's progress (LIST:BUSY is 1 while a list runs; an earlier test's progress stays behind)
        while _get(PREFIX + "LIST:BUSY") != 1 or _get(PREFIX + "LIST:PROGRESS") < 100:
            time.sleep(0.01)
        live.kill()

    killer = threading.Thread(target=kill_mid_batch)
    killer.start()
    with pytest.raises(InstrumentError, match="did not answer"):
        run_scan(make_sampler("random", grid, coverage=0.5, seed=3), _instrument(live, "list"), store,
                 stop=StopRules(coverage=0.5), batch_size=512, route=False)  # one batch of about 1.2 s
    killer.join()
    store.release()
    before = ScanStore.open(store.path).measurements()
    assert 0 < len(before["indices"]) < 512  # the points of the failed batch measured before the kill are kept
    np.testing.assert_array_equal(before["values"][:, 0], IMAGE[before["indices"][:, 0], before["indices"][:, 1]])

    live.restart()
    again = ScanStore.open(store.path, "a")
    result = run_scan(make_sampler("random", grid, coverage=0.5, seed=3), _instrument(live, "list"), again,
                      stop=StopRules(coverage=0.5), batch_size=512, route=False)
    again.close(result.stop_reason)
    after = ScanStore.open(store.path).measurements()
    flat = grid.ravel(after["indices"])
    assert len(flat) == len(np.unique(flat)) == 512
    np.testing.assert_array_equal(after["values"][:, 0], IMAGE[after["indices"][:, 0], after["indices"][:, 1]])


def test_noise_equals_the_simulated_instrument_with_the_same_seed(ioc, tmp_path):
    from fastflow.instruments.simulated import SimulatedInstrument

    path = tmp_path / "sample.npy"
    np.save(path, IMAGE)
    ioc.stop()  # this process's CA environment has one port pair: borrow it for a noisy IOC
    noisy = start_ioc(str(path), PREFIX, env=ioc.env, time_scale=0.0, noise="poisson:50", seed=3)
    try:
        idx = _points(60, seed=6)
        point = _instrument(noisy, "point").measure(idx[:30]).values[:, 0]
        listed = _instrument(noisy, "list").measure(idx[30:]).values[:, 0]
    finally:
        noisy.stop()
        ioc.restart()
    sim = SimulatedInstrument(IMAGE, noise="poisson:50", seed=3)
    np.testing.assert_array_equal(point, sim.measure(idx[:30]).values[:, 0])
    np.testing.assert_array_equal(listed, sim.measure(idx[30:]).values[:, 0])
    assert not np.array_equal(point, IMAGE[idx[:30, 0], idx[:30, 1]])


# ------------------------------------------------------------------------------- fly-scan segments
FLY = dict(dwell=0.004, speed=400.0, settle=0.01, line_overhead=0.02, raster="fly", name="test-fly")
SEGMENTS = [((3, 2), (3, 25)), ((9, 9), (9, 9)), ((5, 30), (28, 30)), ((30, 0), (20, 10)), ((14, 17), (14, 17))]


def _segments():
    return [(np.array(a), np.array(b)) for a, b in SEGMENTS]


def _fly_ioc(ioc, tmp_path, time_scale):
    """An IOC whose stage flies (the FLY model from a JSON file), on the module's ports."""
    import json

    sample, model = tmp_path / "sample.npy", tmp_path / "fly.json"
    np.save(sample, IMAGE)
    model.write_text(json.dumps(FLY))
    ioc.stop()
    return start_ioc(str(sample), PREFIX, env=ioc.env, timing=str(model), time_scale=time_scale)


def test_segments_and_flown_runs_on_the_ioc_equal_the_simulated_instrument(ioc, tmp_path):
    """Noise off, one time model: the IOC's list mode flies what the simulated instrument flies, with the same
    values and the same seconds per point (the IOC's LIST:TIMES, in simulated seconds times the time scale)."""
    from fastflow.instruments.epics import EpicsInstrument
    from fastflow.instruments.simulated import SimulatedInstrument
    from fastflow.segments import make_segment
    from fastflow.timing import TimeModel

    model, scale = TimeModel(**FLY), 0.5
    rows = np.array([[12, x] for x in range(4, 20)] + [[20, 3], [1, 1]] + [[y, 5] for y in range(22, 30, 2)])
    fly = _fly_ioc(ioc, tmp_path, scale)
    try:
        inst = EpicsInstrument(fly.grid, _map(fly, "list"), timing=model)
        assert inst.can_fly and inst.describe()["timing"]["raster"] == "fly"
        got_batch = inst.measure(rows)                    # runs of equal steps, flown where faster
        pixels, got_segments = inst.measure_segments(_segments())
        stepping = EpicsInstrument(fly.grid, _map(fly, "list"), timing=dataclasses.replace(model, raster="step"))
        assert not stepping.can_fly
        _, got_points = stepping.measure_segments(_segments()[:1])
    finally:
        fly.stop()
        ioc.restart()
    sim = SimulatedInstrument(IMAGE, timing=model)
    want_batch = sim.measure(rows)
    sim_pixels, want_segments = sim.measure_segments(_segments())
    np.testing.assert_array_equal(pixels, sim_pixels)
    assert len(pixels) == sum(make_segment(np.array(a), np.array(b)).n for a, b in SEGMENTS)
    for got, want in ((got_batch, want_batch), (got_segments, want_segments)):
        np.testing.assert_array_equal(got.values, want.values)
        np.testing.assert_allclose(got.positions, want.positions)
        np.testing.assert_allclose(np.diff(got.times) / scale, np.diff(want.times), rtol=1e-6, atol=1e-9)
    # the flights are real: a flown pixel costs the fly time, not a move, a settle and a dwell
    flown = np.diff(want_segments.times)[:23]             # pixels 1..23 of the first segment
    np.testing.assert_allclose(flown[:22], model.dwell)
    assert flown[22] == pytest.approx(model.dwell + model.line_overhead)
    step = SimulatedInstrument(IMAGE, timing=dataclasses.replace(model, raster="step"))
    step.measure_segments(_segments())
    assert step.elapsed > sim.elapsed + 22 * model.settle
    np.testing.assert_array_equal(got_points.values[:, 0], IMAGE[3, 2:26])    # a stepping map measures points
    assert np.diff(got_points.times).min() / scale > model.dwell + model.settle


def test_fly_flags_on_a_stage_that_steps_are_refused_and_nothing_is_measured(live):
    inst = _instrument(live, "list")                      # the module's IOC: a step-scan model
    assert inst.can_fly                                   # the map has the PV; the stage refuses the flights
    with pytest.raises(InstrumentError, match="refused the put") as info:
        inst.measure_segments(_segments()[:1])
    assert len(info.value.partial) == 0 and inst.n_points == 0
    m = inst.measure(_points(5, seed=1))                  # without flags it measures as before
    assert len(m) == 5
    point = _instrument(live, "point")
    assert not point.can_fly
    pixels, m = point.measure_segments([(np.array([2, 2]), np.array([2, 6]))])
    np.testing.assert_array_equal(m.values[:, 0], IMAGE[2, 2:7])


def test_a_cost_aware_fast_scan_flies_on_the_ioc_as_on_the_simulated_instrument(ioc, tmp_path):
    """`--timing` names the beamline's fly model on EPICS: FAST weighs it and the list map flies its runs."""
    import json

    from fastflow.runs import ScanConfig, acquire, create_run
    from fastflow.segments import flown
    from fastflow.store import ScanStore
    from fastflow.timing import TimeModel

    model = tmp_path / "beamline.json"
    model.write_text(json.dumps(FLY))
    fly = _fly_ioc(ioc, tmp_path, 0.05)
    try:
        sample, pv_map = _sample_and_map(fly, tmp_path, "list")
        common = dict(sample=sample, sampler="fast", coverage=0.25, batch_size=40, seed=2, timing=str(model))
        stores = {}
        for kind, extra in (("epics", dict(instrument="epics", pv_map=pv_map)), ("simulated", {})):
            run_dir = create_run(ScanConfig(**common, **extra), tmp_path / kind)
            assert acquire(run_dir, figure=False)["stop_reason"] == "coverage reached"
            stores[kind] = ScanStore.open(run_dir / "scan.zarr")
    finally:
        fly.stop()
        ioc.restart()
    epics, simulated = (stores[k].measurements() for k in ("epics", "simulated"))
    np.testing.assert_array_equal(epics["indices"], simulated["indices"])
    np.testing.assert_array_equal(epics["values"], simulated["values"])
    attrs = stores["epics"].attrs
    assert attrs["instrument"]["can_fly"] and attrs["instrument"]["timing"]["name"] == "test-fly"
    assert attrs["sampler"]["cost"]["name"] == "test-fly" == stores["simulated"].attrs["sampler"]["cost"]["name"]
    grid, fly_model = stores["epics"].grid, TimeModel(**FLY)      # FAST's batches hold runs that were flown
    batches = [simulated["indices"][simulated["batch"] == b] for b in np.unique(simulated["batch"])]
    assert sum(seg.n for b in batches for seg in flown(b, fly_model, grid)) >= 10


# ------------------------------------------------------------------------------- scans on the IOC
def _sample_and_map(ioc, tmp_path, mode="point"):
    sample = tmp_path / "sample.npy"
    np.save(sample, IMAGE)
    pv_map = tmp_path / f"map-{mode}.toml"
    _map(ioc, mode).save(pv_map)
    return str(sample), str(pv_map)


@pytest.mark.parametrize(("mode", "overlap"), [("point", False), ("list", False), ("point", True)])
def test_fast_scan_on_the_ioc_equals_the_simulated_instrument_run(live, tmp_path, mode, overlap):
    """The same FAST scan (same image, seed, noise off, the demo time model as its cost) through EPICS and on
    the simulated instrument; with overlap the IOC is driven from the scan loop's measuring thread."""
    from fastflow.runs import ScanConfig, acquire, create_run
    from fastflow.store import ScanStore

    sample, pv_map = _sample_and_map(live, tmp_path, mode)
    common = dict(sample=sample, sampler="fast", coverage=0.3, batch_size=25, snapshots=[0.1], seed=4,
                  overlap=overlap, sampler_options={"cost": "demo"})
    runs = {}
    for kind, extra in (("epics", dict(instrument="epics", pv_map=pv_map)), ("simulated", {})):
        run_dir = create_run(ScanConfig(**common, **extra), tmp_path / kind)
        report = acquire(run_dir, figure=False)
        assert report["stop_reason"] == "coverage reached" and report["instrument"] == kind
        runs[kind] = ScanStore.open(run_dir / "scan.zarr")
    epics, simulated = (runs[k].measurements() for k in ("epics", "simulated"))
    np.testing.assert_array_equal(epics["indices"], simulated["indices"])      # the same points, in order
    np.testing.assert_array_equal(epics["values"], simulated["values"])        # the same values
    np.testing.assert_allclose(epics["positions"], simulated["positions"])     # readbacks = targets here
    assert runs["epics"].attrs["instrument"]["kind"] == "epics"
    assert runs["epics"].snapshot_table()[-1]["nrmse"] == pytest.approx(runs["simulated"].snapshot_table()[-1]["nrmse"])
    fitted = runs["epics"].attrs           # a time model fitted to the IOC's timestamps, and the saving from it
    assert fitted["time_model_fit"]["n_moves"] >= 10 and fitted["raster_time_s"] > 0
    assert runs["epics"].snapshot_table()[-1]["saving"] is not None
    assert runs["simulated"].attrs["sampler"]["cost"]["name"] == "demo"


def test_ioc_killed_five_times_then_fastflow_scan_resume_completes(live, tmp_path, prefect_api):
    """Kill the IOC at random moments of a scan; every measured point stays on disk; `--resume` finishes."""
    import json
    import subprocess
    import sys

    from fastflow.runs import ScanConfig, acquire, create_run
    from fastflow.store import ScanStore

    sample, pv_map = _sample_and_map(live, tmp_path)
    run_dir = create_run(ScanConfig(sample=sample, sampler="halton", coverage=0.8, batch_size=40, snapshots=[],
                                    instrument="epics", pv_map=pv_map), tmp_path / "run")
    rng = np.random.default_rng(11)
    counts = [0]

    def kill_while_measuring(before: int, delay: float, killed_at: list[float]) -> None:
        # kill once this attempt has connected and measures (a kill during the connection is another test's
        # case), so that a slow start on a busy machine does not turn it into a connection failure
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if _get(PREFIX + "DET:COUNT") > before:
                    break
            except InstrumentError:
                pass
            time.sleep(0.01)
        time.sleep(delay)
        killed_at.append(time.monotonic())
        live.kill()

    for kill in range(5):
        if not live.running:
            live.restart()
        killed_at: list[float] = []
        before = int(_get(PREFIX + "DET:COUNT"))  # acquisitions so far (the IOC serves the whole module)
        killer = threading.Thread(target=kill_while_measuring, args=(before, rng.uniform(0.05, 0.25), killed_at))
        killer.start()
        with pytest.raises(InstrumentError) as failure:
            acquire(run_dir, figure=False)
        stopped = time.monotonic()
        killer.join()
        # the scan stopped within the timeout, naming the PV and the last point measured
        assert stopped - killed_at[0] < TIMEOUTS["acquire"] + TIMEOUTS["move"] + 3
        assert PREFIX in str(failure.value) and "last point" in str(failure.value)
        store = ScanStore.open(run_dir / "scan.zarr")
        assert store.attrs["status"] == "failed"
        counts.append(store.n_points)
    assert counts == sorted(counts) and counts[-1] > counts[1] > 0     # the scan advanced between the kills

    live.restart()
    env = {**os.environ, **live.env}
    done = subprocess.run([sys.executable, "-m", "fastflow.cli", "scan", "--resume", str(run_dir), "--report", "json",
                           "--evaluate", "none", "--no-publish"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stop_reason"] == "coverage reached"
    m = ScanStore.open(run_dir / "scan.zarr").measurements()
    flat = live.grid.ravel(m["indices"])
    assert len(flat) == len(np.unique(flat)) == round(0.8 * IMAGE.size)    # none lost, none measured twice
    np.testing.assert_array_equal(m["values"][:, 0], IMAGE[m["indices"][:, 0], m["indices"][:, 1]])
