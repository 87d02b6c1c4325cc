"""Samplers: where to measure next. Every sampler speaks the ask/tell protocol of :mod:`.protocol`."""

from fastflow.sampling.protocol import BaseSampler, Sampler

__all__ = ["BaseSampler", "Sampler"]
