"""The `vidtempo` command. Each subcommand is a thin call into the library."""

from __future__ import annotations

import argparse
import sys

from vidtempo import config as C


def _fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def cmd_zoo_list(args: argparse.Namespace) -> int:
    rows = []
    for name in C.zoo_names():
        cfg = C.load(name)
        results = (
            " ".join(f"{r.top1:.2f}/{r.top5:.2f}@{r.protocol}" for r in cfg.reference.results)
            if cfg.reference
            else "-"
        )
        rows.append(
            (
                name,
                cfg.model.arch,
                cfg.data.dataset,
                str(cfg.model.num_segments),
                results,
                _fmt_int(cfg.reference.params if cfg.reference else None),
            )
        )
    header = ("name", "model", "dataset", "frames", "zoo top1/top5@views", "params")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print(line.format(*r).rstrip())
    return 0


def _print_reference(cfg: C.Config) -> None:
    ref = cfg.reference
    if ref is None:
        print("reference: none")
        return
    print(f"zoo reference ({ref.source}):")
    for r in ref.results:
        label = f" ({r.name})" if r.name else ""
        print(f"  top1/top5 @{r.protocol}{label}: {r.top1:.2f} / {r.top5:.2f}")
    if ref.original_top1 is not None:
        print(
            f"  'reference' columns (original code): {ref.original_top1:.2f} / {ref.original_top5:.2f}"
        )
    print(f"  params: {ref.params:,}   FLOPs: {ref.flops:,}   gpu_mem: {ref.gpu_mem_mb} MB")
    print(f"  zoo GPUs: {ref.zoo_gpus}   resolution: {ref.resolution}   pretrain: {ref.pretrain}")
    if ref.checkpoint:
        print(f"  checkpoint: {ref.checkpoint}")


def cmd_zoo_show(args: argparse.Namespace) -> int:
    cfg = C.load(args.name, args.set or None)
    print(C.dump_yaml(cfg), end="")
    print("---")
    _print_reference(cfg)
    print(
        f"linear scaling rule: base lr {cfg.optim.lr:g} at reference global batch "
        f"{cfg.reference_global_batch} ({cfg.train.gpus} GPUs x {cfg.train.videos_per_gpu} videos)"
        f" -> effective lr {cfg.effective_lr:g} at global batch {cfg.global_batch} "
        f"({cfg.run.num_workers} workers x {cfg.run.batch_per_worker or cfg.train.videos_per_gpu})"
    )
    print(f"protocols: val {C.protocol(cfg.data.val)}, test {C.protocol(cfg.data.test)}")
    _print_measured(cfg)
    return 0


def _print_measured(cfg: C.Config) -> None:
    from vidtempo import models

    params, macs224 = models.measure(cfg, 224)
    _, macs256 = models.measure(cfg, 256)
    ref = cfg.reference
    same = "" if ref is None else (" (= zoo)" if params == ref.params else f" (zoo {ref.params:,})")
    print(f"built model: {params:,} parameters{same}")
    zoo = "" if ref is None else f"; zoo FLOPs {ref.flops:,}"
    print(
        f"  multiply-adds per test view (torch.utils.flop_counter / 2): {macs224:,} at 224², "
        f"{macs256:,} at 256²{zoo}"
    )


def cmd_config_validate(args: argparse.Namespace) -> int:
    cfg = C.load(args.file, args.set or None)
    print(
        f"{args.file}: valid ({cfg.name}: {cfg.model.arch}, {cfg.data.dataset}, "
        f"{len(C.flatten(cfg))} keys)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidtempo", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    zoo = sub.add_parser("zoo", help="the zoo configs and their published numbers")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)
    zl = zsub.add_parser("list", help="a table of every zoo config")
    zl.set_defaults(func=cmd_zoo_list)
    zs = zsub.add_parser("show", help="the resolved config and the zoo's numbers")
    zs.add_argument("name", help="zoo config name or YAML path")
    zs.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override")
    zs.set_defaults(func=cmd_zoo_show)

    cfgp = sub.add_parser("config", help="check config files")
    csub = cfgp.add_subparsers(dest="config_command", required=True)
    cv = csub.add_parser("validate", help="load a YAML strictly and report problems")
    cv.add_argument("file")
    cv.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override")
    cv.set_defaults(func=cmd_config_validate)
    imp = sub.add_parser("import-checkpoint", help="convert another codebase's checkpoint")
    imp.add_argument("source", choices=["mmaction2"], help="where the checkpoint comes from")
    imp.add_argument("input", help="the .pth file (MMAction2 0.x or 1.x)")
    imp.add_argument("output", help="the vidtempo checkpoint to write")
    imp.add_argument("--config", required=True, help="zoo config name or YAML of the model")
    imp.set_defaults(func=cmd_import_checkpoint)

    bench = sub.add_parser("bench", help="measurements behind BENCHMARKS.md")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    bo = bsub.add_parser("op", help="tin_shift fwd+bwd: native kernel vs pure-PyTorch reference")
    bo.add_argument("--device", default="cpu", help="cpu or cuda")
    bo.add_argument(
        "--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"]
    )
    bo.add_argument("--videos", type=int, default=8, help="videos per batch (N)")
    bo.add_argument("--frames", type=int, default=8, help="frames per video (T)")
    bo.add_argument("--repeats", type=int, default=20, help="timed rounds per shape")
    bo.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    bo.add_argument("--json", default=None, help="also write the results to this JSON file")
    bo.set_defaults(func=_bench_op)
    bm = bsub.add_parser("models", help="train-step cost per clip of TSN/TSM/TIN/TANet/TPN vs TSN")
    bm.add_argument("--size", type=int, default=112)
    bm.add_argument("--frames", type=int, default=8)
    bm.add_argument("--clips", type=int, default=2, help="clips per batch")
    bm.add_argument("--repeats", type=int, default=5)
    bm.add_argument("--only", nargs="+", default=None, help="a subset, e.g. --only TSN TSM TIN")
    bm.add_argument("--json", default=None)
    bm.set_defaults(func=_bench_models)
    return p


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    from vidtempo import models
    from vidtempo.models.checkpoint import CheckpointMismatch, import_mmaction2

    cfg = C.load(args.config)
    try:
        n = import_mmaction2(args.input, args.output, models.build(cfg), cfg.name)
    except (CheckpointMismatch, ValueError, FileNotFoundError) as exc:
        print(f"vidtempo: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {n} tensors for {cfg.name} (strict: every key mapped)")
    return 0


def _bench_models(args: argparse.Namespace) -> int:
    from vidtempo.bench import models

    return models.main(args)


def _bench_op(args: argparse.Namespace) -> int:
    from vidtempo.bench import op

    return op.main(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except C.ConfigError as exc:
        print(f"vidtempo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
