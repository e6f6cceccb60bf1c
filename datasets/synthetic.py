"""Generate and convert the synthetic temporal dataset (the demo and end-to-end test data).

    python datasets/synthetic.py --out data/synthetic

is the same as `vidtempo prepare synthetic --out data/synthetic`: mp4 clips and lists under
data/synthetic/raw, shards under data/synthetic/train and data/synthetic/val.
"""

import sys

from vidtempo.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "synthetic", *sys.argv[1:]]))
