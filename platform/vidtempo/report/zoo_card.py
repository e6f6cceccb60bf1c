"""What `vidtempo zoo list` and `zoo show` print: the zoo configs as a table, one config's
published numbers and scaled learning rate, and (with --measure) the model built from it."""

from __future__ import annotations

from vidtempo import config as C


def _fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def table() -> str:
    """One line per zoo config: model, dataset, frames, the zoo's top1/top5 per protocol, params."""
    rows = []
    for name in C.zoo_names():
        cfg = C.load(name)
        ref = cfg.reference
        results = (" ".join(f"{r.top1:.2f}/{r.top5:.2f}@{r.protocol}" for r in ref.results)
                   if ref else "-")  # fmt: skip
        rows.append((name, cfg.model.arch, cfg.data.dataset, str(cfg.model.num_segments), results,
                     _fmt_int(ref.params if ref else None)))  # fmt: skip
    header = ("name", "model", "dataset", "frames", "zoo top1/top5@views", "params")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(line.format(*r).rstrip() for r in [header, tuple("-" * w for w in widths), *rows])


def reference(cfg: C.Config) -> str:
    ref = cfg.reference
    if ref is None:
        return "reference: none"
    lines = [f"zoo reference ({ref.source}):"]
    for r in ref.results:
        label = f" ({r.name})" if r.name else ""
        lines.append(f"  top1/top5 @{r.protocol}{label}: {r.top1:.2f} / {r.top5:.2f}")
    if ref.original_top1 is not None:
        lines.append(f"  'reference' columns (original code): {ref.original_top1:.2f} / "
                     f"{ref.original_top5:.2f}")  # fmt: skip
    lines.append(f"  params: {ref.params:,}   FLOPs: {ref.flops:,}   gpu_mem: {ref.gpu_mem_mb} MB")
    lines.append(f"  zoo GPUs: {ref.zoo_gpus}   resolution: {ref.resolution}   "
                 f"pretrain: {ref.pretrain}")  # fmt: skip
    if ref.checkpoint:
        lines.append(f"  checkpoint: {ref.checkpoint}")
    return "\n".join(lines)


def show(cfg: C.Config) -> str:
    """The resolved config, the zoo's numbers, the linear scaling rule and the protocols."""
    return "\n".join([
        C.dump_yaml(cfg).rstrip("\n"), "---", reference(cfg),
        f"linear scaling rule: base lr {cfg.optim.lr:g} at reference global batch "
        f"{cfg.reference_global_batch} ({cfg.train.gpus} GPUs x {cfg.train.videos_per_gpu} videos)"
        f" -> effective lr {cfg.effective_lr:g} at global batch {cfg.global_batch} "
        f"({cfg.run.num_workers} workers x {cfg.batch_per_worker})",
        f"protocols: val {C.protocol(cfg.data.val)}, test {C.protocol(cfg.data.test)}",
    ])  # fmt: skip


def measured(cfg: C.Config) -> str:
    """The model built from `cfg` (torch): its parameters against the zoo's, and its
    multiply-adds per test view."""
    from vidtempo import models

    params, macs224 = models.measure(cfg, 224)
    _, macs256 = models.measure(cfg, 256)
    ref = cfg.reference
    same = "" if ref is None else (" (= zoo)" if params == ref.params else f" (zoo {ref.params:,})")
    zoo = "" if ref is None else f"; zoo FLOPs {ref.flops:,}"
    return (f"built model: {params:,} parameters{same}\n"
            f"  multiply-adds per test view (torch.utils.flop_counter / 2): {macs224:,} at 224², "
            f"{macs256:,} at 256²{zoo}")  # fmt: skip
