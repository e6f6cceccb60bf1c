"""Sweep the base lr and shift_div of TIN-R50 on Something-Something V1 with ASHA.

    ray job submit --working-dir . -- python jobs/tune_tin_sthv1.py --data /data/sthv1 \\
        --imagenet /models/resnet50-0676ba61.pth --workers 8 --gpu --samples 16

Default space: optim.lr=loguniform:0.005:0.05 (the base lr at the zoo's 8 × 6 videos; each trial's
effective lr follows the linear scaling rule) and model.shift_div=choice:4,8,16. `--space` replaces
it. The best config is written as a YAML that jobs/train.py accepts.
"""

import argparse
import sys

from vidtempo.cli import add_tune_arguments, run

DEFAULT_SPACE = ["optim.lr=loguniform:0.005:0.05", "model.shift_div=choice:4,8,16"]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_tune_arguments(parser, "tin_r50_1x1x8_40e_sthv1_rgb")
    args = parser.parse_args()
    args.space = args.space or DEFAULT_SPACE
    sys.exit(run(args))  # cmd_tune, errors reported as `vidtempo tune` does
