"""Training: the per-worker loop (loop.py), optimizer groups (optim.py), lr schedules
(schedule.py), checkpoints (checkpoint.py) and the driver (run.py)."""
