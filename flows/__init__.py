"""Prefect flows over the fastflow library (thin wrappers; the pipeline issue fills this in)."""
