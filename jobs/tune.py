"""Sweep any config with Ray Tune: one Ray Train run per trial, ASHA or a grid, nested MLflow runs.

    python jobs/tune.py tin_r18_synthetic --data demo/data \\
        --space optim.lr=grid:0.01,0.03 --space model.shift_div=grid:4,8
    ray job submit --working-dir . --runtime-env-json "$(vidtempo runtime-env)" -- \\
        python jobs/tune.py RECIPE --data s3://... --space ... --name my-sweep
    ... the same command with --resume continues it (after `ray job stop`, a lost driver)

The same options as `vidtempo tune`; see `--help`. jobs/tune_tin_sthv1.py is its twin with TIN's
Something-Something V1 recipe and search space as defaults.
"""

import argparse
import sys

from vidtempo.cli import run
from vidtempo.cli.train import add_tune_arguments

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_tune_arguments(parser, "--config")
    sys.exit(run(parser.parse_args()))  # cmd_tune, errors reported as `vidtempo tune` does
