"""Expected reduction in distortion (ERD): the learned part of the FAST / SLADS-Net sampler.

:mod:`fastflow.erd.model` holds the regressor (standardised SLADS features -> random-Fourier RBF map ->
ReLU network -> ERD) with a pickle-free, validated, versioned file format and a model card.
"""

from fastflow.erd.model import (
    DEFAULT_N_COMPONENTS,
    FORMAT_NAME,
    FORMAT_VERSION,
    ERDModel,
    ModelError,
    feature_statistics,
    make_rbf_map,
    rbf_transform,
)

__all__ = [
    "DEFAULT_N_COMPONENTS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ERDModel",
    "ModelError",
    "feature_statistics",
    "make_rbf_map",
    "rbf_transform",
]
