"""Tasks that publish results to Tiled."""

from __future__ import annotations

from prefect import task

from tasks.common import logger, retry_unless_user_error


@task(name="publish-run", persist_result=False, retries=3, retry_delay_seconds=3,
      retry_condition_fn=retry_unless_user_error, timeout_seconds=600)
def publish_run(run_dir: str, tiled_uri: str | None = None, api_key: str | None = None) -> str:
    """Publish a run (store, evaluation, provenance) to a Tiled server, or to the local catalog of its data folder."""
    from pathlib import Path

    from fastflow import catalog

    run_dir_path = Path(run_dir)
    key = catalog.publish_run(run_dir_path / "scan.zarr", uri=tiled_uri, api_key=api_key,
                              catalog=None if tiled_uri else run_dir_path.parent)
    logger().info("published run %s to %s", key, tiled_uri or f"the local catalog in {run_dir_path.parent}")
    return key


@task(name="publish-dataset", persist_result=False, retries=3, retry_delay_seconds=3,
      retry_condition_fn=retry_unless_user_error, timeout_seconds=600)
def publish_dataset(zarr_path: str, key: str, tiled_uri: str | None = None, api_key: str | None = None,
                    catalog_dir: str | None = None) -> str:
    """Publish a Zarr dataset (e.g. benchmark results) under ``key`` to a Tiled server or a local catalog."""
    import xarray as xr

    from fastflow import catalog

    ds = xr.open_zarr(zarr_path, consolidated=False).load()
    published = catalog.publish_dataset(ds, key, uri=tiled_uri, api_key=api_key, catalog=catalog_dir)
    logger().info("published %s to %s", published, tiled_uri or f"the local catalog in {catalog_dir}")
    return published
