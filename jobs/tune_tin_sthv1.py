"""Sweep the base lr and shift_div of TIN-R50 on Something-Something V1 with ASHA.

    ray job submit --working-dir . -- python jobs/tune_tin_sthv1.py --data s3://BUCKET/data/sthv1 \\
        --imagenet s3://BUCKET/weights/resnet50-0676ba61.pth --workers 8 --gpu --final

The space is TIN's preset, jobs/configs/spaces/tin.yaml (optim.lr=loguniform:0.005:0.05, the base
lr at the zoo's 8 × 6 videos, each trial's effective lr following the linear scaling rule, and
model.shift_div=choice:4,8,16); `--space-file` replaces it. Trials are ranked on a held-out 10% of
train/; `--final` then trains the best config on all of train/ and tests it on val/.
"""

import argparse
import sys

from vidtempo.cli import run
from vidtempo.cli.train import add_tune_arguments

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_tune_arguments(parser, "tin_r50_1x1x8_40e_sthv1_rgb")
    sys.exit(run(parser.parse_args()))  # cmd_tune, errors reported as `vidtempo tune` does
