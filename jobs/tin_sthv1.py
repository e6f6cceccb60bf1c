"""TIN-R50 on Something-Something V1, the MMAction2 0.x zoo recipe (tin_r50_1x1x8_40e_sthv1_rgb):
train on Ray Train, evaluate the 1-clip centre-crop protocol, log to MLflow beside the zoo's
44.25 / 73.94.

    ray job submit --working-dir . -- python jobs/tin_sthv1.py --data s3://BUCKET/data/sthv1 \\
        --imagenet s3://BUCKET/weights/resnet50-0676ba61.pth --workers 8 --gpu

--data holds train/ and val/ shard folders (datasets/README.md); --imagenet is where every worker
reads the ImageNet weights (a URI, torchvision://resnet50, or a local file on one machine); the
cluster's commands are in docs/cluster.md. The lr is the recipe's for 8 GPUs × 6 videos and is
rescaled to your workers × batch by the linear scaling rule.
"""

import argparse
import sys

from vidtempo.cli import run
from vidtempo.cli.train import add_run_arguments

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, "tin_r50_1x1x8_40e_sthv1_rgb")
    sys.exit(run(parser.parse_args()))  # cmd_train, errors reported as `vidtempo train` does
