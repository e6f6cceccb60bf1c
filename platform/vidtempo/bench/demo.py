"""`vidtempo bench demo`: where the time of `make demo` goes, per model, on this machine.

For TSN and TIN with their demo recipes, on the demo's own dataset:

  parts     what one epoch costs, in CPU seconds, measured piece by piece in this process on
            one thread: decoding the sampled frames, augmenting them, the training steps (both
            workers' share), validation (decode + forward, spread over its interval), and the
            checkpoint and report (state saved, metrics logged to SQLite)
  bare      a bare PyTorch loop over the same decoded batches on the same CPUs: two processes of
            one thread each, the demo's batch per worker, gradients averaged over gloo as DDP
            does — what the steps alone would give
  demo      the demo's own run (local Ray, two workers), `--epochs` epochs: the training clips/s
            of each epoch as the run logs it, its wall time, and the CPU seconds of every process
            it ran, grouped: the train workers, the decode tasks, Ray's own processes (GCS,
            raylet, dashboard and agents, idle workers, the Train controller) and the driver

The demo's clips/s over the bare loop's is the number the README's first impression depends on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vidtempo import config as C
from vidtempo.bench import emit
from vidtempo.machine import cpu_name

MODELS = {"TSN": "tsn_r18_synthetic", "TIN": "tin_r18_synthetic"}


def _train_rows(data: Path, n: int) -> list[dict]:
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for shard in sorted((data / "train").glob("*.parquet")):
        rows += pq.read_table(shard).to_pylist()
        if len(rows) >= n:
            break
    return rows[:n]


def _median_s(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _input_parts(cfg, rows: list[dict], storage: str) -> tuple[float, float, np.ndarray]:
    """(decode s, augment s) per clip of the train pipeline, and the decoded clips (N, T, 3, H, W)."""
    from vidtempo.data.augment import apply_pipeline
    from vidtempo.data.decode import decode_jpegs, decode_video
    from vidtempo.data.sampling import sample_indices
    from vidtempo.data.transform import VideoTransform, row_rng

    tf = VideoTransform(cfg.data.train, cfg.data, storage)
    decode_s = augment_s = 0.0
    clips = []
    for row in rows:
        rng = row_rng(0, 0, row["video_id"])
        inds = sample_indices(int(row["num_frames"]), cfg.data.train.sampler, rng)
        t = time.perf_counter()
        if storage == "frames":
            frames = decode_jpegs(row["frames"], inds.reshape(-1))
        else:
            frames = decode_video(row["video"], inds.reshape(-1))
        t1 = time.perf_counter()
        x, _ = apply_pipeline(frames, inds.shape[0], cfg.data.train, int(row["label"]), rng,
                              cfg.data.flip_label_map, tf.jitter_order)  # fmt: skip
        decode_s += t1 - t
        augment_s += time.perf_counter() - t1
        clips.append(x.numpy())
    return decode_s / len(rows), augment_s / len(rows), np.stack(clips)


def _step(model, wrapped, opt, x, y, cfg) -> None:
    """The training loop's step (train/step.py), on clips that all decoded."""
    import torch

    from vidtempo.train.step import train_step

    ok = torch.ones(len(y), dtype=torch.bool)
    train_step(wrapped, opt, x, y, ok, cfg.optim.grad_clip, model.parameters())


def _model_parts(cfg, clips: np.ndarray, batch: int) -> dict[str, float]:
    """Seconds of one training step (batch clips), of one eval forward per clip, and of one
    checkpoint + metrics report, on this thread."""
    import torch

    from vidtempo import models
    from vidtempo.tracking import record, store
    from vidtempo.train import checkpoint as ckpt
    from vidtempo.train.optim import build_optimizer
    from vidtempo.train.step import norm_tensors, normalise

    torch.manual_seed(0)
    model = models.build(cfg).train()
    opt = build_optimizer(model, cfg.optim, cfg.effective_lr)
    mean, std = norm_tensors(cfg, torch.device("cpu"))
    x = normalise(clips[:batch], mean, std, torch.device("cpu"))
    y = torch.arange(batch) % cfg.model.num_classes

    step_s = _median_s(lambda: _step(model, model, opt, x, y, cfg), repeats=15, warmup=3)
    model.eval()
    with torch.no_grad():
        forward_s = _median_s(lambda: model(x), repeats=10) / batch
    with tempfile.TemporaryDirectory() as tmp:
        uri = store.sqlite_uri(Path(tmp) / "mlflow.db")
        run_id = record.report_run(uri, "bench-demo", "parts", {}, end=False)
        metrics = {"loss": 1.0, "lr": 0.1, "clips_per_s": 1.0, "val/top1": 50.0}

        def report():
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 0}
            with tempfile.TemporaryDirectory(dir=tmp) as d:
                ckpt.save_state(d, 0, state)
            record.epoch(uri, run_id, 1, metrics)

        report_s = _median_s(report, repeats=5, warmup=1)
    return {"step_s": step_s, "forward_s": forward_s, "report_s": report_s}


# ---- the bare loop: two processes, one thread each, gloo all-reduce as DDP --------------------


def _bare_worker(rank: int, world: int, port: int, name: str, clips_path: str, steps: int,
                 batch: int) -> None:  # fmt: skip
    import torch
    import torch.distributed as dist

    from vidtempo import models
    from vidtempo.train.optim import build_optimizer
    from vidtempo.train.step import norm_tensors, normalise

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)  # fmt: skip
    cfg = C.load(name)
    torch.manual_seed(0)
    model = models.build(cfg).train()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = build_optimizer(model, cfg.optim, cfg.effective_lr)
    clips = np.load(clips_path)
    mean, std = norm_tensors(cfg, torch.device("cpu"))
    n = len(clips) // batch
    t = 0.0
    for i in range(steps + 3):
        if i == 3:  # after three warm-up steps
            dist.barrier()
            t = time.perf_counter()
        j = (i * world + rank) % n
        x = normalise(clips[j * batch:(j + 1) * batch], mean, std, torch.device("cpu"))
        _step(model, ddp, opt, x, torch.arange(batch) % cfg.model.num_classes, cfg)
    dist.barrier()
    Path(clips_path).with_name(f"seconds{rank}").write_text(str(time.perf_counter() - t))
    dist.destroy_process_group()


def _bare_loop(name: str, clips: np.ndarray, steps: int, batch: int, world: int = 2) -> float:
    """Clips/s of `world` one-thread processes stepping over the decoded clips. They are
    spawned, never forked (a fork of a process holding Ray's gRPC channels breaks them), and
    leave their times in files."""
    import torch.multiprocessing as mp

    from vidtempo.machine import free_port

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/clips.npy"
        np.save(path, clips)
        mp.spawn(_bare_worker, args=(world, free_port(), name, path, steps, batch), nprocs=world,
                 join=True)  # fmt: skip
        seconds = max(float(Path(tmp, f"seconds{r}").read_text()) for r in range(world))
    return world * steps * batch / seconds


# ---- the demo's own run, with every process's CPU seconds ------------------------------------

GROUPS = ("train workers", "decode tasks", "Ray's own processes", "driver")


def _title(proc) -> str:
    """A Ray worker's title ("ray::RayTrainWorker", "ray::IDLE", …) or a program's name."""
    cmd = proc.cmdline()
    if not cmd:
        return proc.name()
    if cmd[0].startswith("ray::"):
        return cmd[0].split("(")[0].split(".")[0]
    prog = next((Path(c).name for c in cmd if c.endswith(".py")), Path(cmd[0]).name)
    return prog


def _group(proc) -> str:
    title = " ".join(proc.cmdline()[:2]) if proc.pid != os.getpid() else ""
    if proc.pid == os.getpid():
        return "driver"
    if "RayTrainWorker" in title:
        return "train workers"
    if "ReadRowGroups" in title or "MapBatches" in title or "ray::Map" in title:
        return "decode tasks"
    return "Ray's own processes"


class CpuMeter:
    """CPU seconds (user, system) of this process and all its descendants, by group, sampled
    every 0.5 s (a process that ends is counted up to its last sample)."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()
        self.seen: dict[int, list] = {}  # pid -> [group, first (user, sys), last (user, sys)]
        self.started = False
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        import psutil

        for p in [self.me, *self.me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                c = p.cpu_times()
                used = (c.user, c.system)
                if p.pid not in self.seen:  # one there before the run counts from now
                    first = used if not self.started else (0.0, 0.0)
                    self.seen[p.pid] = [_group(p), first, used, _title(p)]
                    continue
                entry = self.seen[p.pid]
                entry[2] = used
                if entry[0] == "Ray's own processes":  # an idle worker that took a task since
                    entry[0], entry[3] = _group(p), _title(p)

    def _loop(self) -> None:
        while not self.stop_flag.wait(0.5):
            self._sample()

    def __enter__(self):
        self._sample()
        self.started = True
        self.t0 = time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join()
        self.wall = time.perf_counter() - self.t0

    def by_group(self) -> dict[str, dict[str, float]]:
        out = {g: {"user": 0.0, "system": 0.0, "titles": {}} for g in GROUPS}
        for g, first, last, title in self.seen.values():
            out[g]["user"] += last[0] - first[0]
            out[g]["system"] += last[1] - first[1]
            titles = out[g]["titles"]
            titles[title] = titles.get(title, 0.0) + sum(last) - sum(first)
        return out


def _demo_run(cfg, data: Path, workdir: Path) -> dict:
    from vidtempo import tracking
    from vidtempo.train.run import fit

    with CpuMeter() as meter:
        res = fit(cfg, data, name=f"bench-demo-{cfg.model.arch.split('_')[0]}-{time.strftime('%H%M%S')}")
    uri, run_id = res["mlflow_uri"], res["mlflow_run_id"]
    rate = [v for _, v in sorted(tracking.metric_history(uri, run_id, "clips_per_s"))]
    wait = [v for _, v in sorted(tracking.metric_history(uri, run_id, "data_wait_frac"))]
    return {"wall_s": meter.wall, "cpu_s": meter.by_group(), "clips_per_s": rate,
            "data_wait": wait, "test_top1": res["metrics"]}  # fmt: skip


def run(workdir: str | Path, epochs: int = 3, clips: int = 64, only: list[str] | None = None) -> dict:
    import torch

    from vidtempo import demo
    from vidtempo.data.schema import read_manifest
    from vidtempo.ray_session import ensure_ray

    workdir = Path(workdir).resolve()
    data = demo.prepare(workdir)
    storage = read_manifest(data / "train")["storage"]
    rows = _train_rows(data, clips)
    torch.set_num_threads(1)
    out = {"benchmark": "demo", "device": cpu_name(), "cpus": os.cpu_count(), "epochs": epochs,
           "storage": storage, "models": {}}  # fmt: skip
    cfgs = {label: C.load(name, ["train.min_steps=null", f"train.epochs={epochs}",
                                 f"run.storage_path={workdir / 'runs'}", "run.experiment=bench-demo"])
            for label, name in MODELS.items() if not only or label in only}  # fmt: skip
    for label, cfg in cfgs.items():  # first the parts and the bare loops, with no Ray running
        batch, world = cfg.train.videos_per_gpu, cfg.run.num_workers
        n_train = demo.VIDEOS_PER_CLASS["train"] * cfg.model.num_classes
        n_val = demo.VIDEOS_PER_CLASS["val"] * cfg.model.num_classes
        steps = n_train // (batch * world)
        decode_s, augment_s, decoded = _input_parts(cfg, rows, storage)
        parts = _model_parts(cfg, decoded, batch)
        epoch = {  # CPU seconds of one epoch, all workers together
            "decode": n_train * decode_s,
            "augment": n_train * augment_s,
            "train steps": steps * world * parts["step_s"],
            "validation": n_val * (decode_s + augment_s + parts["forward_s"]) / cfg.train.val_interval,
            "checkpoint + report": parts["report_s"],
        }
        bare = _bare_loop(cfg.name, decoded, steps=min(steps, 40), batch=batch, world=world)
        out["models"][label] = {"config": cfg.name, "steps_per_epoch": steps, "batch": batch,
                                "workers": world, "per_clip_ms": {"decode": decode_s * 1e3,
                                "augment": augment_s * 1e3, "forward (eval)": parts["forward_s"] * 1e3},
                                "step_ms": parts["step_s"] * 1e3, "epoch_cpu_s": epoch,
                                "bare_clips_per_s": bare}  # fmt: skip
    ensure_ray()
    for label, cfg in cfgs.items():
        out["models"][label]["demo"] = _demo_run(cfg, data, workdir)
    return out


def table(r: dict) -> str:
    lines = [f"# vidtempo bench demo — {r['device']}, {r['cpus']} CPUs, the demo's data "
             f"({r['storage']}), {r['epochs']} epochs per model", ""]  # fmt: skip
    for label, m in r["models"].items():
        d = m["demo"]
        cpu = sum(v["user"] + v["system"] for v in d["cpu_s"].values())
        parts = m["epoch_cpu_s"]
        ideal = sum(parts.values())
        rate = d["clips_per_s"]
        steady = max(rate[1:] or rate)
        lines += [f"## {label} ({m['config']}): {m['steps_per_epoch']} steps × {m['workers']} "
                  f"workers × {m['batch']} clips an epoch; one step {m['step_ms']:.1f} ms on one thread", "",
                  "| one epoch, measured piece by piece | CPU s | share |", "|---|---:|---:|"]  # fmt: skip
        lines += [f"| {k} | {v:.1f} | {v / ideal:.0%} |" for k, v in parts.items()]
        lines += [f"| **sum** (= {ideal / r['cpus']:.1f} s of wall on {r['cpus']} CPUs) | "
                  f"{ideal:.1f} | |", "",
                  f"| the demo's run, {r['epochs']} epochs ({d['wall_s']:.0f} s wall, "
                  f"{cpu:.0f} CPU s of {d['wall_s'] * r['cpus']:.0f} available) | CPU s | "
                  "of which system | share |", "|---|---:|---:|---:|"]  # fmt: skip
        for g, v in d["cpu_s"].items():
            both = v["user"] + v["system"]
            top = sorted(v["titles"].items(), key=lambda kv: -kv[1])[:4]
            which = ", ".join(f"{t} {c:.0f}" for t, c in top if c >= 0.5)
            lines.append(f"| {g} ({which}) | {both:.1f} | {v['system']:.1f} | {both / cpu:.0%} |")
        lines += ["", f"training clips/s per epoch: {', '.join(f'{v:.0f}' for v in rate)} "
                  f"(data wait {', '.join(f'{w:.0%}' for w in d['data_wait'])}); bare loop "
                  f"{m['bare_clips_per_s']:.0f} clips/s → the demo's best epoch at "
                  f"**{steady / m['bare_clips_per_s']:.2f}×** the bare loop", ""]  # fmt: skip
    return "\n".join(lines)


HELP = ("where `make demo`'s time goes: decode, augment, steps, validation, checkpoints, "
        "Ray's processes; against a bare loop")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="bench/demo", help="where the demo's data and runs go")
    p.add_argument("--epochs", type=int, default=3, help="epochs of each demo run (default 3)")
    p.add_argument("--only", nargs="+", default=None, choices=list(MODELS), help="a subset")
    p.add_argument("--json", default=None, help="also write the result as JSON here")


def main(args: argparse.Namespace) -> int:
    r = run(args.workdir, epochs=args.epochs, only=args.only)
    return emit(r, table(r), args.json)
