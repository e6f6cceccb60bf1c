"""Train any config on Ray Train, evaluate it under its test protocol, log it to MLflow.

    python jobs/train.py tanet_r50_1x1x8_50e_sthv1_rgb --data /data/sthv1 --imagenet r50.pth
    ray job submit --working-dir . -- python jobs/train.py RECIPE --data s3://... --gpu

The same options as `vidtempo train`; see `--help`.
"""

import argparse
import sys

from vidtempo.cli import run
from vidtempo.cli.train import add_run_arguments

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, "--config")
    sys.exit(run(parser.parse_args()))  # cmd_train, errors reported as `vidtempo train` does
