"""Hyper-parameter search: search spaces in dotted config keys (space.py) and the Ray Tune
driver with nested MLflow runs (sweep.py)."""
