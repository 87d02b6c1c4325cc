"""Test configuration: isolate every state directory before heavy libraries are imported."""

from __future__ import annotations

import os
import tempfile

_SCRATCH = tempfile.mkdtemp(prefix="fastflow-tests-")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["FASTFLOW_DATA_DIR"] = os.path.join(_SCRATCH, "runs")
os.environ["PREFECT_HOME"] = os.path.join(_SCRATCH, "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ.setdefault("DASK_TEMPORARY_DIRECTORY", os.path.join(_SCRATCH, "dask"))
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

import pytest  # noqa: E402 - after the environment above


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """One Prefect API server for the session (Prefect's test harness, SQLite in a temporary folder).

    Its URL is exported in ``PREFECT_API_URL`` so that subprocesses (the ``fastflow`` command, Dask
    workers) report to it instead of starting a temporary server each.
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def tiny_learned_model_path(tmp_path_factory):
    """A small completion model for noisy particle images, trained in under a minute (tests only).

    It is trained with the library's own training-set generator and training loop, restricted to one
    phantom class, Poisson noise and random masks, so the tests exercise the real path end to end.
    """
    torch = pytest.importorskip("torch")
    from fastflow.recon.learned_data import TrainingSet, chunk_samples
    from fastflow.recon.learned_training import LearnedTrainingConfig, train_learned_model

    torch.set_num_threads(1)
    kind = dict(families=["random"], classes={"particles": 1.0}, noise_shares=(0, 1, 0))
    train = TrainingSet.from_chunks([chunk_samples(i, sources=12, crop=48, crops_per_source=3, **kind)
                                     for i in range(5)])
    val = TrainingSet.from_chunks([chunk_samples(0, sources=8, crop=48, split="validation", **kind)])
    config = LearnedTrainingConfig(base=8, depth=3, steps=400, batch_size=8, learning_rate=3e-3, warmup=20,
                                   checkpoint_every=0, validate_every=0)
    model, _ = train_learned_model(train, val, config)
    path = tmp_path_factory.mktemp("learned") / "tiny.safetensors"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_learned_model(tiny_learned_model_path):
    from fastflow.recon.learned import LearnedModel

    return LearnedModel.load(tiny_learned_model_path)
