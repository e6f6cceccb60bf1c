"""vidtempo: Ray-distributed training and hyper-parameter search for video action recognition."""

__version__ = "0.1.0"
