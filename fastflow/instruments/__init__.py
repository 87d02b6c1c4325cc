"""Instruments: where measurements come from.

:class:`Instrument` is the protocol every instrument implements and :class:`Measurement` what it returns;
:class:`SimulatedInstrument` measures a known image with optional noise and a stage-timing model. An EPICS
instrument will implement the same protocol.
"""

from fastflow.instruments.base import Instrument, Measurement
from fastflow.instruments.simulated import SimulatedInstrument, format_noise, parse_noise

__all__ = ["Instrument", "Measurement", "SimulatedInstrument", "format_noise", "parse_noise"]
