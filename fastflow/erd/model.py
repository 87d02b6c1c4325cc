"""The ERD regressor: six SLADS features of a candidate pixel -> expected reduction in distortion.

Pipeline
--------
For features ``x`` of shape ``(n, 6)`` (the order of :mod:`fastflow.erd.features`):

1. standardise with training statistics: ``u = (x - feature_mean) / feature_scale``;
2. random-Fourier map of an RBF kernel ``exp(-gamma |u - v|²)``:
   ``z = sqrt(2 / D) * cos(u @ rbf_weights + rbf_offset)``, with ``rbf_weights`` ``(6, D)`` drawn as
   ``sqrt(2 gamma) N(0, 1)`` and ``rbf_offset`` ``(D,)`` as ``U(0, 2π)`` (:func:`make_rbf_map`);
3. a multilayer perceptron with ReLU hidden layers and a linear output:
   ``h = relu(z @ W1 + b1)``, ``h = relu(h @ W2 + b2)``, ..., ``y = h @ Wk + bk``;
4. ``erd = y * target_scale`` (the training targets were divided by ``target_scale``).

The reference implementation (Kandel et al. 2023) applies the map to unstandardised features and keeps the
map implicit in a random seed; here the standardisation statistics and the drawn map are stored with the
network weights, so a model file alone determines every prediction.

File format
-----------
A fastflow model file (:mod:`fastflow.modelfile`: safetensors arrays and a JSON card, no pickle) of kind
``"fastflow-erd-model"``, format version 2, holding float64 arrays:

==================================  ===========  =====================================================
array                               shape        content
==================================  ===========  =====================================================
``feature_mean``, ``feature_scale``  (6,)         standardisation statistics (scale > 0)
``rbf_weights``                     (6, D)       kernel-map projection
``rbf_offset``                      (D,)         kernel-map phases
``layer{i}_weights``                2-D          layer ``i`` weights, ``i = 0 .. L-1``; chained shapes
``layer{i}_bias``                   1-D          layer ``i`` bias; the last layer has one output
``target_scale``                    0-d          output scale (> 0)
==================================  ===========  =====================================================

:meth:`ERDModel.load` validates all of it (the file checks of :func:`fastflow.modelfile.read_model_file`,
then names, shapes and scales) and raises :class:`ModelError`, with the file name and the problem on one
line, for anything else. Version 1 was an ``.npz`` archive; :func:`convert_npz_model` turns one into
this format (``fastflow convert-model``).

Model card
----------
``card`` is a JSON object describing how the model was made. Nothing here requires any key; training fills:

``c``
    The SLADS ``c`` of the reduction-in-distortion labels (width factor of the Gaussian window).
``training_images``
    Names or paths of the images the labels came from.
``coverages``
    Sampling coverages (fractions) at which training masks were drawn.
``seeds``
    Random seeds of the masks (and of the kernel map and network initialisation).
``n_samples``
    Number of (feature, label) rows used for fitting.
``validation``
    Held-out scores, e.g. ``{"r2": 0.81, "rmse": 3.2}``.
``feature_names``
    The six feature names, in column order.
``density_radius``
    The fixed radius (pixels) of the sparsity feature.
``value_normalisation``
    How measured values were scaled before computing features (e.g. ``"0-100, frozen percentiles"``).
``library_versions``
    Versions of numpy, scikit-learn, ... used for training, as ``{name: version}``.
``created``
    ISO 8601 creation time.
``content_hash``
    :meth:`ERDModel.content_hash` of the arrays (:func:`fastflow.modelfile.content_hash`); written by
    :meth:`ERDModel.save`, checked by :meth:`ERDModel.load`.
``fastflow_version``
    The fastflow version that trained the model.

Examples
--------
>>> import numpy as np
>>> w, b = make_rbf_map(n_components=4, seed=0)
>>> model = ERDModel(
...     feature_mean=np.zeros(6), feature_scale=np.ones(6), rbf_weights=w, rbf_offset=b,
...     layers=[(np.ones((4, 2)), np.zeros(2)), (np.ones((2, 1)), np.zeros(1))],
...     target_scale=10.0, card={"c": 2},
... )
>>> model.predict(np.zeros((3, 6))).shape
(3,)
>>> model.n_parameters
13
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastflow.erd.features import N_FEATURES
from fastflow.errors import InputError
from fastflow.modelfile import ModelError, card_json, content_hash, read_model_file, write_model_file

if TYPE_CHECKING:  # pragma: no cover - typing only; scikit-learn is imported by callers, not here
    from sklearn.neural_network import MLPRegressor

__all__ = [
    "DEFAULT_N_COMPONENTS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "N_FEATURES",
    "ERDModel",
    "ModelError",
    "convert_npz_model",
    "feature_statistics",
    "make_rbf_map",
    "rbf_transform",
]

FORMAT_NAME = "fastflow-erd-model"
FORMAT_VERSION = 2
"""Version 2: a safetensors model file (:mod:`fastflow.modelfile`); version 1 was an ``.npz`` archive."""
DEFAULT_N_COMPONENTS = 50
PREDICT_CHUNK = 8192
"""Rows per block in :meth:`ERDModel.predict`: keeps the ``(chunk, D)`` temporaries in cache."""

_PredictionArrays = tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]
_FIXED_ARRAYS = ("feature_mean", "feature_scale", "rbf_weights", "rbf_offset", "target_scale")


def make_rbf_map(
    n_features: int = N_FEATURES,
    n_components: int = DEFAULT_N_COMPONENTS,
    gamma: float | None = None,
    seed: int | np.random.Generator | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a random-Fourier-feature map of the RBF kernel ``exp(-gamma |u - v|²)``.

    Parameters
    ----------
    n_features : int
        Input dimension (6 SLADS features).
    n_components : int
        Output dimension ``D``.
    gamma : float, optional
        Kernel width. Default ``1 / n_features``: for standardised inputs two random rows are on average
        ``2 n_features`` apart squared, so their kernel value is about ``exp(-2)`` and each projected
        coordinate has standard deviation ``sqrt(2)`` rad. (The reference used 0.01 on raw features.)
    seed : int or numpy.random.Generator or None
        Seed of :func:`numpy.random.default_rng`, or a generator to draw from.

    Returns
    -------
    weights : numpy.ndarray
        ``(n_features, n_components)`` float64, ``sqrt(2 gamma) * N(0, 1)``, drawn first.
    offset : numpy.ndarray
        ``(n_components,)`` float64, ``U(0, 2π)``, drawn second.

    Raises
    ------
    InputError
        If a size is not a positive integer or ``gamma`` is not a positive finite number.

    Examples
    --------
    >>> w, b = make_rbf_map(seed=1)
    >>> w.shape, b.shape
    ((6, 50), (50,))
    >>> bool(np.array_equal(w, make_rbf_map(seed=1)[0]))
    True
    """
    for name, value in (("n_features", n_features), ("n_components", n_components)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive integer; got {value!r}")
    if gamma is None:
        gamma = 1.0 / n_features
    if not isinstance(gamma, (int, float, np.number)) or not math.isfinite(gamma) or gamma <= 0:
        raise InputError(f"gamma must be a positive finite number; got {gamma!r}")
    rng = np.random.default_rng(seed)
    weights = math.sqrt(2.0 * float(gamma)) * rng.standard_normal((int(n_features), int(n_components)))
    offset = rng.uniform(0.0, 2.0 * math.pi, int(n_components))
    return weights, offset


def feature_statistics(features: Any, min_scale: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Standardisation statistics of a training feature matrix.

    Parameters
    ----------
    features : array_like
        ``(n, n_features)`` finite training features, ``n >= 1``.
    min_scale : float
        Columns whose standard deviation is below this (constant columns) get scale 1, so that
        standardising them yields zeros instead of dividing by zero.

    Returns
    -------
    mean, scale : numpy.ndarray
        ``(n_features,)`` float64 column means and population standard deviations.

    Raises
    ------
    InputError
        If ``features`` is not a non-empty finite 2-D array.
    """
    x = _as_feature_matrix(features, n_features=None)
    if len(x) == 0 or not np.all(np.isfinite(x)):
        raise InputError(f"training features must be non-empty and finite; got shape {x.shape}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[~(scale >= min_scale)] = 1.0
    return mean, scale


def rbf_transform(
    features: Any,
    feature_mean: np.ndarray,
    feature_scale: np.ndarray,
    rbf_weights: np.ndarray,
    rbf_offset: np.ndarray,
) -> np.ndarray:
    """Standardise features and apply the random-Fourier RBF map (pipeline steps 1-2), in float64.

    This is the input the network is trained on; :meth:`ERDModel.transform` calls it with the model's
    arrays.

    Parameters
    ----------
    features : array_like
        ``(n, n_features)`` features.
    feature_mean, feature_scale : numpy.ndarray
        ``(n_features,)`` standardisation statistics.
    rbf_weights : numpy.ndarray
        ``(n_features, D)`` projection.
    rbf_offset : numpy.ndarray
        ``(D,)`` phases.

    Returns
    -------
    numpy.ndarray
        ``(n, D)`` float64 ``sqrt(2 / D) * cos(((x - mean) / scale) @ rbf_weights + rbf_offset)``.

    Raises
    ------
    InputError
        If ``features`` is not 2-D with ``n_features`` numeric columns.
    """
    weights = np.asarray(rbf_weights, dtype=np.float64)
    x = _as_feature_matrix(features, n_features=weights.shape[0])
    u = (x - feature_mean) / feature_scale
    return math.sqrt(2.0 / weights.shape[1]) * np.cos(u @ weights + rbf_offset)


def _as_feature_matrix(features: Any, n_features: int | None) -> np.ndarray:
    """``features`` as a 2-D real array (not copied when possible), or an InputError."""
    x = np.asarray(features)
    if x.dtype.kind not in "fiu":
        raise InputError(f"features must be real numbers; got dtype {x.dtype}")
    if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
        want = f"(n, {n_features})" if n_features is not None else "2-D"
        raise InputError(f"features must be a {want} array; got shape {x.shape}")
    return x


# ---------------------------------------------------------------------------------------------- the model


@dataclass(eq=False, repr=False)
class ERDModel:
    """A trained ERD regressor: standardisation, RBF map and ReLU network, with its model card.

    Arrays are copied to float64 and validated on construction; see the module docstring for the
    pipeline and :meth:`load` / :meth:`save` for the file format.

    Parameters
    ----------
    feature_mean, feature_scale : numpy.ndarray
        ``(6,)`` training-set mean and standard deviation of each feature (scale > 0).
    rbf_weights : numpy.ndarray
        ``(6, D)`` kernel-map projection (:func:`make_rbf_map`).
    rbf_offset : numpy.ndarray
        ``(D,)`` kernel-map phases.
    layers : list of (weights, bias)
        Network layers in order; weights ``(n_in, n_out)``, bias ``(n_out,)``. The first takes ``D``
        inputs, every layer but the last is followed by ReLU, and the last has one output.
    target_scale : float
        Positive factor the network output is multiplied by.
    card : dict
        JSON-serialisable model card (see the module docstring); no key is required.

    Raises
    ------
    ModelError
        If any array has the wrong dtype or shape, is not finite, if a scale is not positive, or if the
        card is not a JSON object.
    """

    feature_mean: np.ndarray
    feature_scale: np.ndarray
    rbf_weights: np.ndarray
    rbf_offset: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]
    target_scale: float
    card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.feature_mean = _float_array("feature_mean", self.feature_mean, ndim=1)
        self.feature_scale = _float_array("feature_scale", self.feature_scale, ndim=1)
        self.rbf_weights = _float_array("rbf_weights", self.rbf_weights, ndim=2)
        self.rbf_offset = _float_array("rbf_offset", self.rbf_offset, ndim=1)
        self.layers = _check_layers(self.layers)
        self.target_scale = _positive_float("target_scale", self.target_scale)
        _check_shapes(self.feature_mean, self.feature_scale, self.rbf_weights, self.rbf_offset, self.layers)
        if not np.all(self.feature_scale > 0):
            raise ModelError("feature_scale must be > 0 for every feature")
        if not isinstance(self.card, Mapping):
            raise ModelError(f"the model card must be a JSON object (dict); got {type(self.card).__name__}")
        self.card = dict(self.card)
        card_json(self.card)

    # ---------------------------------------------------------------------------------- description

    @property
    def n_features(self) -> int:
        """Number of input features (6)."""
        return int(self.rbf_weights.shape[0])

    @property
    def n_components(self) -> int:
        """Dimension ``D`` of the kernel map."""
        return int(self.rbf_weights.shape[1])

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Widths of the hidden (ReLU) layers, e.g. ``(50, 5)``."""
        return tuple(int(w.shape[1]) for w, _ in self.layers[:-1])

    @property
    def n_parameters(self) -> int:
        """Number of trained network parameters (weights and biases); the fixed map is not counted."""
        return int(sum(w.size + b.size for w, b in self.layers))

    def __repr__(self) -> str:
        return f"ERDModel({self._architecture()}, hash {self.content_hash()[:12]})"

    def _architecture(self) -> str:
        widths = " -> ".join(str(n) for n in (*self.hidden_sizes, 1))
        return f"{self.n_features} features -> RBF {self.n_components} -> {widths}"

    def describe(self) -> str:
        """A few human-readable lines: architecture, hash prefix and the main model-card entries.

        Returns
        -------
        str
            Lines without a trailing newline; card entries that are absent are left out.
        """
        card = self.card
        lines = [
            f"ERD model {self.content_hash()[:12]}: {self._architecture()} ({self.n_parameters} parameters)"
        ]
        if "c" in card:
            lines.append(f"c: {card['c']}")
        if "training_images" in card:
            lines.append(f"training images: {_short_list(card['training_images'])}")
        if "coverages" in card:
            lines.append(f"coverages: {_short_list(card['coverages'])}")
        if "n_samples" in card:
            lines.append(f"samples: {card['n_samples']}")
        if "validation" in card:
            validation = card["validation"]
            if isinstance(validation, Mapping):
                validation = ", ".join(f"{k}={_fmt(v)}" for k, v in validation.items())
            lines.append(f"validation: {validation}")
        made = [str(card["created"])] if "created" in card else []
        if "fastflow_version" in card:
            made.append(f"fastflow {card['fastflow_version']}")
        if made:
            lines.append("created: " + ", ".join(made))
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------ prediction

    def transform(self, features: Any) -> np.ndarray:
        """Pipeline steps 1-2: standardised features through the RBF map.

        Parameters
        ----------
        features : array_like
            ``(n, 6)`` features.

        Returns
        -------
        numpy.ndarray
            ``(n, D)`` float64 network inputs.

        Raises
        ------
        InputError
            If ``features`` is not an ``(n, 6)`` numeric array.
        """
        return rbf_transform(
            features, self.feature_mean, self.feature_scale, self.rbf_weights, self.rbf_offset
        )

    def predict(
        self, features: Any, *, dtype: Any = np.float32, chunk_size: int = PREDICT_CHUNK
    ) -> np.ndarray:
        """Expected reduction in distortion of each row of ``features``.

        Parameters
        ----------
        features : array_like
            ``(n, 6)`` features. Rows with non-finite features give non-finite ERD; the caller decides
            what to do with them.
        dtype : numpy dtype, optional
            Precision of the map and network. ``float32`` (default) is about 6x faster, because numpy's
            float32 cosine is vectorised; its ERD agrees with ``float64`` to about 1e-6 of the largest
            ERD. ``float64`` reproduces scikit-learn's ``MLPRegressor.predict`` to rounding.
            Standardisation is always done in float64.
        chunk_size : int, optional
            Rows per block.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` float64 ERD.

        Raises
        ------
        InputError
            If ``features`` is not an ``(n, 6)`` numeric array, or ``dtype`` is not float32/float64.
        """
        x = _as_feature_matrix(features, self.n_features)
        compute = np.dtype(dtype)
        if compute not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise InputError(f"dtype must be float32 or float64; got {compute}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise InputError(f"chunk_size must be a positive integer; got {chunk_size!r}")
        params = self._prediction_arrays(compute)
        out = np.empty(len(x), dtype=np.float64)
        for start in range(0, len(x), int(chunk_size)):
            stop = min(start + int(chunk_size), len(x))
            out[start:stop] = self._predict_block(x[start:stop], params, compute)
        return out

    def _prediction_arrays(self, dtype: np.dtype) -> _PredictionArrays:
        """The map and layers cast to ``dtype``.

        Nothing is folded together (e.g. ``sqrt(2 / D)`` into the first layer): in float64 the operations
        then happen in scikit-learn's order, so outputs near zero agree to the last bits too.
        """
        layers = [(w.astype(dtype), b.astype(dtype)) for w, b in self.layers]
        return self.rbf_weights.astype(dtype), self.rbf_offset.astype(dtype), layers

    def _predict_block(self, x: np.ndarray, params: _PredictionArrays, dtype: np.dtype) -> np.ndarray:
        """ERD of one block of rows: float64 standardisation, then the map and network in ``dtype``."""
        rbf_weights, rbf_offset, layers = params
        u = ((x - self.feature_mean) / self.feature_scale).astype(dtype, copy=False)
        # OpenBLAS can raise the FE_INVALID flag in a product of finite matrices (numpy#24067,
        # OpenMathLib/OpenBLAS#1924), which numpy reports as "invalid value encountered in matmul"; seen
        # here in the (n, 5) @ (5, 1) product. Non-finite features propagate to a non-finite ERD anyway.
        with np.errstate(invalid="ignore"):
            h = u @ rbf_weights
            h += rbf_offset
            np.cos(h, out=h)
            h *= dtype.type(math.sqrt(2.0 / self.n_components))
            for weights, bias in layers[:-1]:
                h = h @ weights
                h += bias
                np.maximum(h, 0, out=h)
            weights, bias = layers[-1]
            y = h @ weights
            y += bias
        return y[:, 0] * self.target_scale

    # ------------------------------------------------------------------------------------ identity

    def named_arrays(self) -> Iterator[tuple[str, np.ndarray]]:
        """The model's numeric arrays in file order, under their file names (``target_scale`` 0-d).

        Yields
        ------
        (str, numpy.ndarray)
            ``feature_mean``, ``feature_scale``, ``rbf_weights``, ``rbf_offset``, ``layer0_weights``,
            ``layer0_bias``, ..., ``target_scale``.
        """
        yield "feature_mean", self.feature_mean
        yield "feature_scale", self.feature_scale
        yield "rbf_weights", self.rbf_weights
        yield "rbf_offset", self.rbf_offset
        for i, (weights, bias) in enumerate(self.layers):
            yield f"layer{i}_weights", weights
            yield f"layer{i}_bias", bias
        yield "target_scale", np.array(self.target_scale, dtype="<f8")

    def content_hash(self) -> str:
        """SHA-256 (hex) of the model's arrays (:func:`fastflow.modelfile.content_hash`).

        The model card is not hashed, so two models with equal weights have equal hashes whatever their
        cards say; the hash identifies the function the model computes.

        Returns
        -------
        str
            64 lowercase hex digits.
        """
        return content_hash(dict(self.named_arrays()))

    # ------------------------------------------------------------------------------------ conversion

    @classmethod
    def from_sklearn(
        cls,
        mlp: MLPRegressor,
        feature_mean: np.ndarray,
        feature_scale: np.ndarray,
        rbf_weights: np.ndarray,
        rbf_offset: np.ndarray,
        target_scale: float,
        card: Mapping[str, Any] | None = None,
    ) -> ERDModel:
        """Build a model from a fitted scikit-learn ``MLPRegressor`` trained on :func:`rbf_transform` output.

        Parameters
        ----------
        mlp : sklearn.neural_network.MLPRegressor
            Fitted, with ``activation="relu"``, identity output and a single target.
        feature_mean, feature_scale, rbf_weights, rbf_offset : numpy.ndarray
            The standardisation and map the network's inputs were made with.
        target_scale : float
            The factor the training targets were divided by.
        card : mapping, optional
            Model card.

        Returns
        -------
        ERDModel
            ``predict(x) == mlp.predict(transform(x)) * target_scale`` up to rounding.

        Raises
        ------
        ModelError
            If ``mlp`` is not fitted, not a ReLU network with identity output, or its shapes do not fit.
        """
        if not hasattr(mlp, "coefs_") or not hasattr(mlp, "intercepts_"):
            raise ModelError(f"{type(mlp).__name__} is not fitted: it has no coefs_/intercepts_")
        activation = getattr(mlp, "activation", None)
        if activation != "relu":
            raise ModelError(f"the network must use activation='relu'; this one uses {activation!r}")
        out_activation = getattr(mlp, "out_activation_", None)
        if out_activation != "identity":
            raise ModelError(
                f"the network output must be 'identity' (a regressor); this one is {out_activation!r}"
            )
        layers = [(np.array(w), np.array(b)) for w, b in zip(mlp.coefs_, mlp.intercepts_, strict=True)]
        return cls(
            feature_mean=feature_mean,
            feature_scale=feature_scale,
            rbf_weights=rbf_weights,
            rbf_offset=rbf_offset,
            layers=layers,
            target_scale=target_scale,
            card=dict(card or {}),
        )

    # ------------------------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` as a fastflow model file (safetensors; exactly that name).

        The file is written to a temporary name in the same directory and renamed, so an existing model
        is never left half-written. The card written carries ``content_hash``; ``self.card`` is not changed.

        Parameters
        ----------
        path : str or os.PathLike
            Destination file; ``.safetensors`` is the conventional suffix.

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        ModelError
            If the file cannot be written.
        """
        return write_model_file(
            path, dict(self.named_arrays()), kind=FORMAT_NAME, version=FORMAT_VERSION, card=self.card
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ERDModel:
        """Read and validate a model written by :meth:`save`.

        Nothing in the file is ever unpickled or executed (see :func:`fastflow.modelfile.read_model_file`).

        Parameters
        ----------
        path : str or os.PathLike
            A ``.safetensors`` ERD model file.

        Returns
        -------
        ERDModel
            The model, with the stored card (including ``content_hash``).

        Raises
        ------
        ModelError
            One line naming the file and the problem: missing or unreadable file, not a model file,
            another kind of model, unsupported format version, missing or unexpected array, wrong shape,
            non-finite values, invalid card, or a content hash that does not match the arrays.
        """
        name = os.fspath(path)
        model_file = read_model_file(name, kind=FORMAT_NAME, versions=(FORMAT_VERSION,), what="ERD model")
        try:
            return cls._from_arrays(model_file.arrays, model_file.card)
        except ModelError as exc:
            raise ModelError(f"{name} is not a valid ERD model: {exc}") from None

    @classmethod
    def _from_arrays(cls, arrays: Mapping[str, np.ndarray], card: Mapping[str, Any]) -> ERDModel:
        """A model from arrays named as :meth:`named_arrays` names them; a ModelError if any is off."""
        for key in _FIXED_ARRAYS:
            if key not in arrays:
                raise ModelError(f"missing array {key!r}")
        n = 0
        while f"layer{n}_weights" in arrays or f"layer{n}_bias" in arrays:
            for part in ("weights", "bias"):
                if f"layer{n}_{part}" not in arrays:
                    raise ModelError(f"missing array 'layer{n}_{part}'")
            n += 1
        if n == 0:
            raise ModelError("missing array 'layer0_weights'")
        known = set(_FIXED_ARRAYS) | {f"layer{i}_{p}" for i in range(n) for p in ("weights", "bias")}
        extra = sorted(set(arrays) - known)
        if extra:
            raise ModelError(f"unexpected array {extra[0]!r}")
        scale = np.asarray(arrays["target_scale"])
        if scale.shape != ():
            raise ModelError(f"target_scale must be a scalar; got shape {scale.shape}")
        return cls(
            feature_mean=arrays["feature_mean"],
            feature_scale=arrays["feature_scale"],
            rbf_weights=arrays["rbf_weights"],
            rbf_offset=arrays["rbf_offset"],
            layers=[(arrays[f"layer{i}_weights"], arrays[f"layer{i}_bias"]) for i in range(n)],
            target_scale=float(scale[()]),
            card=dict(card),
        )


def convert_npz_model(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> ERDModel:
    """Convert an ERD model of fastflow 0.1 (format 1, an ``.npz`` archive) into a model file.

    The archive is read with ``numpy.load(allow_pickle=False)``, so nothing in it is unpickled; its
    arrays are checked as a model's are, and the card is carried over (with a new ``content_hash``).

    Parameters
    ----------
    source : str or os.PathLike
        The ``.npz`` model.
    target : str or os.PathLike
        The new ``.safetensors`` file.

    Returns
    -------
    ERDModel
        The converted model.

    Raises
    ------
    ModelError
        If the archive cannot be read or is not a format-1 fastflow ERD model.
    """
    import json
    import zipfile

    name = os.fspath(source)
    try:
        with np.load(name, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(f"cannot read {name} as an .npz ERD model: {exc}") from None
    if "format" not in arrays or str(arrays.pop("format")) != FORMAT_NAME:
        raise ModelError(f"{name} is not a fastflow ERD model (.npz of format 1)")
    version = int(arrays.pop("format_version", np.array(-1)))
    if version != 1:
        raise ModelError(f"{name} has ERD model format version {version}; only version 1 is converted")
    try:
        card = json.loads(str(arrays.pop("card_json")))
    except (KeyError, ValueError):
        raise ModelError(f"{name} is not a valid ERD model: its card is missing or not JSON") from None
    if not isinstance(card, dict):
        raise ModelError(f"{name} is not a valid ERD model: its card is not a JSON object")
    card.pop("content_hash", None)
    card["converted_from"] = {"file": Path(name).name, "format_version": 1}
    try:
        model = ERDModel._from_arrays(arrays, card)
    except ModelError as exc:
        raise ModelError(f"{name} is not a valid ERD model: {exc}") from None
    model.save(target)
    return model


# ------------------------------------------------------------------------------------ validation helpers


def _float_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """``value`` as a finite float64 array of ``ndim`` dimensions (a copy), or a ModelError."""
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any conversion failure means "not an array"
        raise ModelError(f"{name} is not an array ({exc})") from None
    if array.dtype.kind not in "fiu":
        raise ModelError(f"{name} must hold real numbers; got dtype {array.dtype}")
    if array.ndim != ndim:
        raise ModelError(f"{name} must be {ndim}-D; got shape {array.shape}")
    array = np.array(array, dtype="<f8", order="C", copy=True)
    if not np.all(np.isfinite(array)):
        raise ModelError(f"{name} contains NaN or infinite values")
    return array


def _positive_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ModelError(f"{name} must be a positive finite number; got {number!r}")
    return number


def _check_layers(layers: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    if not isinstance(layers, Sequence) or len(layers) == 0:
        raise ModelError("layers must be a non-empty list of (weights, bias) pairs")
    checked = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, Sequence) or len(layer) != 2:
            raise ModelError(f"layer {i} must be a (weights, bias) pair")
        weights = _float_array(f"layer{i}_weights", layer[0], ndim=2)
        checked.append((weights, _float_array(f"layer{i}_bias", layer[1], ndim=1)))
    return checked


def _check_shapes(
    mean: np.ndarray,
    scale: np.ndarray,
    rbf_weights: np.ndarray,
    rbf_offset: np.ndarray,
    layers: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    """Raise ModelError unless the shapes chain: (6,), (6,), (6, D), (D,), (D, h1), (h1,), ..., (1,)."""
    for name, array in (("feature_mean", mean), ("feature_scale", scale)):
        if array.shape != (N_FEATURES,):
            raise ModelError(f"{name} must have shape ({N_FEATURES},); got {array.shape}")
    if rbf_weights.shape[0] != N_FEATURES or rbf_weights.shape[1] < 1:
        raise ModelError(f"rbf_weights must have shape ({N_FEATURES}, D); got {rbf_weights.shape}")
    n_in = rbf_weights.shape[1]
    if rbf_offset.shape != (n_in,):
        raise ModelError(f"rbf_offset must have shape ({n_in},) to match rbf_weights; got {rbf_offset.shape}")
    for i, (weights, bias) in enumerate(layers):
        if weights.shape[0] != n_in or weights.shape[1] < 1:
            raise ModelError(f"layer{i}_weights must have shape ({n_in}, n_out); got {weights.shape}")
        n_in = weights.shape[1]
        if bias.shape != (n_in,):
            raise ModelError(f"layer{i}_bias must have shape ({n_in},); got {bias.shape}")
    if n_in != 1:
        raise ModelError(f"the last layer must have 1 output (the ERD); it has {n_in}")


def _short_list(value: Any, limit: int = 6) -> str:
    if isinstance(value, str) or not isinstance(value, Sequence):
        return str(value)
    items = [_fmt(v) for v in value]
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items)} in total)"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
