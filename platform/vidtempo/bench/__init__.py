"""Measurements behind BENCHMARKS.md (`vidtempo bench …`): ratios taken side by side in one run."""
