"""`vidtempo prepare …` (videos or rawframes to Parquet shards) and `vidtempo import-checkpoint`."""

from __future__ import annotations

import argparse

from vidtempo import config as C
from vidtempo.cli.common import add_address_argument, add_node_wait_argument, add_renamed


def add(sub) -> None:
    """This group's commands on the `vidtempo` parser."""
    add_prepare(sub)
    add_import_checkpoint(sub)


def add_prepare(sub) -> None:
    prep = sub.add_parser("prepare", help="convert videos or rawframes to Parquet shards")
    psub = prep.add_subparsers(dest="prepare_command", required=True)
    for kind, help_ in [
        ("rawframes", "frame folders + an MMAction2 list (frame_dir num_frames label)"),
        ("videos", "video files + a list (path label | video_id,num_frames,label | Kinetics CSV)"),
    ]:
        pp = psub.add_parser(kind, help=help_)
        pp.add_argument("--list", required=True, help="the annotation list (a path or a URI)")
        pp.add_argument("--root", required=True, help="the folder the list's paths are relative "
                        "to: a local path or a URI (s3://BUCKET/kinetics400/videos)")  # fmt: skip
        pp.add_argument("--out", required=True, help="the shard directory to write (one split): "
                        "a local path or a URI (s3://BUCKET/data/k400/train)")  # fmt: skip
        pp.add_argument("--dataset", required=True, help="sthv1, sthv2, kinetics400, "
                        "kinetics600, ucf101 (their layout as distributed sets the frame "
                        "template, start index and label file; a flag given wins) or any name")  # fmt: skip
        pp.add_argument("--split", required=True, help="train, val or test")
        pp.add_argument("--classes", default=None, help="class names in label order: one per "
                        "line, `index name` lines or a JSON name → index (default: the "
                        "dataset's label file beside the list, if there)")  # fmt: skip
        pp.add_argument(
            "--short-side", type=int, default=None, help="resize frames to this short side"
        )
        pp.add_argument("--videos-per-shard", type=int, default=64)
        order = pp.add_mutually_exclusive_group()
        order.add_argument("--order-seed", type=int, default=0, help="the shards hold the "
                           "videos in a random order seeded by this (default 0; recorded in "
                           "the manifest): a list grouped by class would else give training "
                           "batches of few classes")  # fmt: skip
        order.add_argument("--list-order", action="store_true",
                           help="keep the list's order instead")
        pp.add_argument("--decoders", type=int, default=None,
                        help="decoder processes on this machine (default: all CPUs)")  # fmt: skip
        add_renamed(pp, "--workers", "--decoders", "decoders", type=int)
        pp.add_argument(
            "--timeout", type=float, default=120.0, help="seconds per video before quarantine"
        )
        if kind == "rawframes":
            pp.add_argument("--filename-tmpl", default=None, help="frame file names "
                            "(default: the dataset's: '{:05}.jpg' for sthv1, else "
                            "'img_{:05}.jpg')")  # fmt: skip
            pp.add_argument("--start-index", type=int, default=None,
                            help="the first frame's number (default: the dataset's, 1)")
        else:
            pp.add_argument("--format", choices=["video", "frames"], default="video",
                            help="the shards keep the container bytes (video) or JPEG frames")  # fmt: skip
            add_renamed(pp, "--storage", "--format", "format", choices=["video", "frames"])
            pp.add_argument(
                "--keyint", type=int, default=None, help="re-encode with this keyframe interval"
            )
        add_prepare_ray(pp)
        pp.set_defaults(func=cmd_prepare, errors=("data", "os"))
    ps = psub.add_parser("synthetic", help="generate and convert the synthetic temporal dataset")
    ps.add_argument("--out", required=True, help="a local folder or a URI (s3://BUCKET/data/synthetic)")
    ps.add_argument("--train-per-class", type=int, default=24)
    ps.add_argument("--val-per-class", type=int, default=8)
    ps.add_argument("--frames", type=int, default=32)
    ps.add_argument("--size", type=int, default=64)
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--decoders", type=int, default=None,
                    help="decoder processes on this machine (default: all CPUs)")
    add_renamed(ps, "--workers", "--decoders", "decoders", type=int)
    ps.add_argument("--videos-per-shard", type=int, default=64)
    ps.add_argument("--format", choices=["frames", "video"], default="frames",
                    help="JPEG frames (default: cheapest to decode) or the lossless H.264 videos")
    add_renamed(ps, "--storage", "--format", "format", choices=["frames", "video"])
    ps.add_argument("--tempo", action="store_true",
                    help="16 classes: the demo's 12 and the tempo classes (a dot circling slowly "
                         "or fast; stripes drifting right or left at a random speed)")  # fmt: skip
    add_prepare_ray(ps)
    ps.set_defaults(func=cmd_prepare, errors=("data", "os"))


def add_prepare_ray(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray", nargs="?", const=True, default=False, action=RayFlag,
        help="convert as Ray tasks, one per shard, across the cluster --address names (default: "
             "RAY_ADDRESS, else a local instance); --root and --out must then be URIs or "
             "shared mounts when the cluster has several nodes")  # fmt: skip
    add_address_argument(parser)
    parser.add_argument("--decode-on", default=None, metavar="RESOURCE",
                        help="with --ray: run the tasks on the nodes carrying this Ray resource "
                             "(cluster.yaml's cpu-decode nodes carry `decode`)")  # fmt: skip
    add_node_wait_argument(parser)


class RayFlag(argparse.Action):
    """`--ray`: convert as Ray tasks. `--ray ADDRESS`, the old spelling of `--ray --address
    ADDRESS`, still works for one release, saying so."""

    def __call__(self, parser, namespace, values, option_string=None):
        if isinstance(values, str):
            import sys

            print("vidtempo: --ray ADDRESS is now --ray --address ADDRESS; the old spelling goes "
                  "in the next release", file=sys.stderr)  # fmt: skip
            namespace.address = values
        namespace.ray = True


def ray_address(args: argparse.Namespace) -> str | None:
    """The conversion's Ray: None for this machine's process pool; else the --address (an
    --address alone asks for Ray too), "" for RAY_ADDRESS or a local instance."""
    if not (args.ray or args.address):
        return None
    return args.address or ""


def cmd_prepare(args: argparse.Namespace) -> int:
    import os

    from vidtempo.data import prepare
    from vidtempo.data.convert import Options

    workers = args.decoders or os.cpu_count() or 2
    if args.prepare_command == "synthetic":
        per_class = {"train": args.train_per_class, "val": args.val_per_class}
        manifests = prepare.prepare_synthetic(args.out, per_class, args.frames, args.size,
                                              args.seed, workers, ray_address=ray_address(args),
                                              decode_resource=args.decode_on,
                                              videos_per_shard=args.videos_per_shard,
                                              storage_kind=args.format,
                                              classes=16 if args.tempo else 12,
                                              node_wait_minutes=args.node_wait or C.RunConfig.node_wait_minutes)  # fmt: skip
    else:
        opts = Options(out=args.out, dataset=args.dataset, split=args.split,
                       short_side=args.short_side, videos_per_shard=args.videos_per_shard,
                       workers=workers, timeout=args.timeout,
                       node_wait_minutes=args.node_wait or C.RunConfig.node_wait_minutes,
                       order_seed=None if args.list_order else args.order_seed)  # fmt: skip
        if args.prepare_command == "rawframes":
            opts.filename_tmpl, opts.start_index = args.filename_tmpl, args.start_index
            m = prepare.prepare_rawframes(args.list, args.root, opts, args.classes,
                                          ray_address(args), args.decode_on)  # fmt: skip
        else:
            opts.storage, opts.keyint = args.format, args.keyint
            m = prepare.prepare_videos(args.list, args.root, opts, args.classes,
                                       ray_address(args), args.decode_on)  # fmt: skip
        manifests = {args.split: m}
    for split, m in manifests.items():
        print(f"{split}: {m['num_videos']} videos in {len(m['shards'])} shards, "
              f"{len(m['classes'])} classes, {m['num_quarantined']} quarantined")  # fmt: skip
    return 0


def add_import_checkpoint(sub) -> None:
    imp = sub.add_parser("import-checkpoint", help="convert another codebase's checkpoint")
    imp.add_argument("config", metavar="RECIPE", help="the recipe of the model: a zoo config name "
                     "or a YAML file (`vidtempo zoo list`)")  # fmt: skip
    imp.add_argument("input", help="the .pth file (MMAction2 0.x or 1.x)")
    imp.add_argument("output", help="the vidtempo checkpoint to write")
    imp.add_argument("--from", dest="source", choices=["mmaction2"], default="mmaction2",
                     help="where the checkpoint comes from (default: mmaction2)")  # fmt: skip
    # the old form `import-checkpoint mmaction2 IN OUT --config RECIPE`: its first argument
    # (the source) lands on RECIPE, which --config then sets
    add_renamed(imp, "--config", "the first argument (the recipe)", "config")
    imp.set_defaults(func=cmd_import_checkpoint, errors=("checkpoint", "value", "missing"))


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    from vidtempo import models
    from vidtempo.models.checkpoint import import_mmaction2

    if args.config == args.source and args.config not in C.zoo_names():
        raise ValueError(f"'{args.config}' is where the checkpoint comes from, not a recipe: the "
                         "recipe comes first, `vidtempo import-checkpoint RECIPE IN.pth OUT.pt`")  # fmt: skip
    cfg = C.load(args.config)
    n = import_mmaction2(args.input, args.output, models.build(cfg), cfg.name)
    print(f"wrote {args.output}: {n} tensors for {cfg.name} (strict: every key mapped)")
    return 0
