"""What the Ray cluster holds, what its autoscaler can add to it, and waiting for that.

    cap = capacity.read()                 # alive nodes + the autoscaler's node types (if any)
    need = capacity.Need.for_run(cfg)     # the bundles a run places, its decoding
    cap.plan(need)                        # {} fits now, {"trainer": 2} once 2 come, None never
    capacity.wait_for(need, cap, minutes) # ask for them (a placement group) and wait

A cluster from the cluster launcher (`ray up cluster.yaml`) runs Ray's autoscaler on its head:
`ray start --head --autoscaling-config=FILE` starts a monitor process with that file, which names
every node type the autoscaler may launch, its resources and `max_workers`. Ray 2.60 keeps the
autoscaler's state in the GCS (`__autoscaling_status`, what `ray status` prints: the nodes of each
type that are up, pending or failed), and a cluster config in the GCS only when an autoscaler
reports one there (v2); the v1 autoscaler that the launcher starts keeps it in that file, which a
task on the head reads from the monitor's command line. A cluster without an autoscaler (started
by hand, a laptop's local instance) has no node types: only its alive nodes count, as strictly as
before.

Nodes come when something asks Ray for resources it cannot place (a task, an actor, a placement
group): `wait_for` asks with a placement group of the run's own bundles, so the autoscaler
launches what the run will use, prints one line while it waits and gives the resources back once
they are there; the run's own placement group takes them seconds later.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import ray

EPS = 1e-9
# A decode task asks for this much of run.decode_resource: enough to be placed only where the
# resource is, too little to limit how many run there (their CPUs do that)
DECODE_SHARE = 0.001
# a worker's decode CPUs when the recipe leaves run.data_cpus_per_worker to the cluster (null)
# and no GPU node says more (preflight.settle)
DATA_CPUS = 1.0
# how often the driver says it is still waiting for the autoscaler
SAY_EVERY_S = 30.0


class ResourceError(RuntimeError):
    """The cluster cannot place the workers a run asks for (now, or ever)."""


@dataclass(frozen=True)
class NodeType:
    """A node type the autoscaler may launch: its resources, at most `max_workers` of it, of
    which `running` are up now."""

    name: str
    resources: dict
    max_workers: int
    running: int = 0

    @property
    def launchable(self) -> int:
        return max(0, self.max_workers - self.running)

    def describe(self) -> str:
        shown = ", ".join(f"{v:g} {k}" for k, v in sorted(self.resources.items())
                          if k in ("CPU", "GPU") or not k.startswith(("memory", "object_store", "node:")))  # fmt: skip
        return f"{self.name} ({shown or 'no resources declared'}; up to {self.max_workers})"


@dataclass(frozen=True)
class Need:
    """What a run places: one bundle per training worker (`strategy` as Ray Train places them),
    `data_cpus` more for its decoding (Ray Data tasks, on nodes carrying `decode` when set)."""

    bundles: tuple[dict, ...]
    strategy: str = "PACK"
    data_cpus: float = 0.0
    decode: str | None = None
    what: str = "the run's workers"
    what_asks: str = "the run"

    @staticmethod
    def for_run(cfg) -> Need:
        r = cfg.run
        bundle = {"CPU": r.cpus_per_worker, **({"GPU": 1.0} if r.use_gpu else {})}
        data = DATA_CPUS if r.data_cpus_per_worker is None else r.data_cpus_per_worker
        return Need(bundles=(bundle,) * r.num_workers, strategy=r.placement_strategy,
                    data_cpus=r.num_workers * data, decode=r.decode_resource,
                    what=f"{r.num_workers} workers")  # fmt: skip

    def times(self, k: int) -> Need:
        """k copies of this need at once (a sweep's concurrent trials)."""
        return Need(self.bundles * k, self.strategy if k == 1 else "PACK", self.data_cpus * k,
                    self.decode, f"{k} × {self.what}", f"{k} runs at once")  # fmt: skip

    def asked(self) -> str:
        """The run's request in words, with its numbers."""
        b = self.bundles[0] if self.bundles else {}
        cpus = sum(x.get("CPU", 0) for x in self.bundles) + self.data_cpus
        gpus = sum(x.get("GPU", 0) for x in self.bundles)
        per = f"{b.get('CPU', 0):g} CPU" + (f", {b['GPU']:g} GPU" if b.get("GPU") else "")
        where = f", decoding on nodes with '{self.decode}'" if self.decode else ""
        if not self.data_cpus:  # tasks, not a training run
            return f"{len(self.bundles)} × ({per}){where}"
        data = self.data_cpus / max(1, len(self.bundles))
        return (f"{len(self.bundles)} workers × ({per}) + {data:g} CPU each for data = "
                f"{cpus:g} CPUs" + (f", {gpus:g} GPUs" if gpus else "") + where)  # fmt: skip


def _fits(free: dict, bundle: dict) -> bool:
    return all(free.get(k, 0) + EPS >= v for k, v in bundle.items() if v > 0)


def _take(free: dict, bundle: dict) -> None:
    for k, v in bundle.items():
        free[k] = free.get(k, 0) - v


def placed(bundles: tuple[dict, ...], nodes: list[dict], strategy: str = "PACK") -> int:
    """How many of `bundles` nodes with these (total) resources hold at once, the way Ray's
    placement group strategies allow (first fit, biggest bundles first)."""
    order = sorted(bundles, key=lambda b: (-b.get("GPU", 0), -b.get("CPU", 0)))
    if strategy == "STRICT_PACK":
        best = 0
        for node in nodes:
            free, n = dict(node), 0
            for b in order:
                if _fits(free, b):
                    _take(free, b)
                    n += 1
            best = max(best, n if n == len(order) else 0)
        return best
    free = [dict(n) for n in nodes]
    count = 0
    used: set[int] = set()
    for b in order:
        for i, f in enumerate(free):
            if strategy == "STRICT_SPREAD" and i in used:
                continue
            if _fits(f, b):
                _take(f, b)
                used.add(i)
                count += 1
                break
    return count


def shortfall(need: Need, nodes: list[dict]) -> tuple[float, float, float]:
    """What `nodes` lack for `need`: (no decode node, workers left unplaced, CPUs short)."""
    decode = 0.0
    if need.decode:
        decode = 0.0 if any(n.get(need.decode, 0) > 0 for n in nodes) else 1.0
    unplaced = len(need.bundles) - placed(need.bundles, nodes, need.strategy)
    worker_cpus = sum(b.get("CPU", 0) for b in need.bundles)
    total = sum(n.get("CPU", 0) for n in nodes)
    cpus_short = max(0.0, worker_cpus + need.data_cpus - total)
    if need.decode:  # and the decoding's CPUs are those of the decode nodes
        data_have = sum(n.get("CPU", 0) for n in nodes if n.get(need.decode, 0) > 0)
        cpus_short += max(0.0, need.data_cpus - data_have)
    return (decode, float(unplaced), round(cpus_short, 6))


def cpus_per_gpu(cap: Capacity) -> float | None:
    """CPUs per GPU of the nodes GPU workers land on — the alive GPU nodes and the GPU node types
    the autoscaler may launch (the smallest ratio: the run fits on any of them); None: no GPUs."""
    shapes = [n for n in cap.alive if n.get("GPU")]
    shapes += [t.resources for t in cap.types if t.resources.get("GPU")]
    return min((s.get("CPU", 0.0) / s["GPU"] for s in shapes), default=None)


@dataclass(frozen=True)
class Capacity:
    """The cluster now (`alive`: each alive node's total resources) and what its autoscaler can
    add (`types`; empty without an autoscaler), at most `max_workers` worker nodes in all of
    which `running` are up."""

    alive: tuple[dict, ...]
    types: tuple[NodeType, ...] = ()
    max_workers: int = 0
    running: int = 0
    source: str = "no autoscaler"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def autoscaling(self) -> bool:
        return bool(self.types)

    def plan(self, need: Need) -> dict[str, int] | None:
        """The nodes to launch so that `need` fits: {} when it fits the alive nodes, None when
        no nodes the autoscaler may launch make it fit (or there is no autoscaler)."""
        nodes = [dict(n) for n in self.alive]
        left = {t.name: t.launchable for t in self.types}
        total_left = max(0, self.max_workers - self.running)
        launch: Counter = Counter()
        gap = shortfall(need, nodes)
        asked = {k for b in need.bundles for k in b} | ({need.decode} if need.decode else set())
        while any(gap):
            best, best_key = None, None
            for t in self.types:
                if left[t.name] < 1 or total_left < 1 or not t.resources:
                    continue
                after = shortfall(need, [*nodes, dict(t.resources)])
                # as Ray's autoscaler chooses: no GPU node for a need without GPUs, then the type
                # whose resources the need uses (not a decode node for training workers)
                unused = {k for k, v in t.resources.items() if v and k not in asked
                          and k not in ("CPU", "memory", "object_store_memory")}  # fmt: skip
                key = (after, "GPU" in unused, len(unused))
                if after < gap and (best_key is None or key < best_key):
                    best, best_key = t, key
            if best is None:
                return None
            nodes.append(dict(best.resources))
            launch[best.name] += 1
            left[best.name] -= 1
            total_left -= 1
            gap = best_key[0]
        return dict(launch)

    def most(self, need: Need, limit: int = 256) -> int:
        """How many copies of `need` the cluster holds at once at its largest."""
        k = 0
        while k < limit and self.plan(need.times(k + 1)) is not None:
            k += 1
        return k

    def describe(self) -> str:
        """The cluster now and at its largest, in one line."""
        cpus = sum(n.get("CPU", 0) for n in self.alive)
        gpus = sum(n.get("GPU", 0) for n in self.alive)
        now = f"the cluster has {len(self.alive)} node(s) with {cpus:g} CPUs and {gpus:g} GPUs"
        if not self.autoscaling:
            return now + " in total (no autoscaler)"
        kinds = ", ".join(t.describe() for t in self.types)
        return (f"{now} up, and its autoscaler may add nodes of type {kinds} — at most "
                f"{self.max_workers} worker nodes in all, {self.running} up")


def describe_plan(launch: dict[str, int]) -> str:
    return " + ".join(f"{n} × {name}" for name, n in sorted(launch.items())) or "nothing"


# ---- reading the cluster -----------------------------------------------------------------------


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def read() -> Capacity:
    """The connected cluster: its alive nodes, and its autoscaler's node types if it has one."""
    config, source = autoscaler_config()
    nodes = alive_nodes()
    alive = tuple(n["Resources"] for n in nodes)
    if not config:
        return Capacity(alive, source=source)
    head_type = config.get("head_node_type")
    specs = {name: {k: float(v) for k, v in (spec.get("resources") or {}).items()}
             for name, spec in (config.get("available_node_types") or {}).items()
             if name != head_type}  # fmt: skip
    running, unmatched = alive_by_type(specs, alive)
    types, notes = [], []
    for name, spec in (config.get("available_node_types") or {}).items():
        if name == head_type:
            continue
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        if not resources:
            notes.append(f"node type {name} declares no resources: vidtempo cannot count on it "
                         "(give it `resources:` in the cluster config)")  # fmt: skip
        types.append(NodeType(name, resources, int(spec.get("max_workers", 0)), running[name]))
    total = config.get("max_workers")
    cap_total = int(total) if total is not None else sum(t.max_workers for t in types)
    return Capacity(alive, tuple(types), cap_total,
                    sum(running[t.name] for t in types) + unmatched, source, tuple(notes))  # fmt: skip


def autoscaling_status() -> dict:
    """The v1 autoscaler's report in the GCS (what `ray status` prints), or {}."""
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        raw = _internal_kv_get("__autoscaling_status")
    except Exception:  # noqa: BLE001 - no report: no autoscaler state to use
        return {}
    return json.loads(raw) if raw else {}


def alive_by_type(specs: dict[str, dict], alive: tuple[dict, ...]) -> tuple[Counter, int]:
    """Alive worker nodes of each type, matched on the resources the type declares, and the
    alive worker nodes of no declared type. From the GCS's node table, which is current: the
    autoscaler's report lags it by a tick both ways (a node it has launched but Ray does not yet
    list, or the reverse), and counting a launching node as up lost it from the cluster at its
    largest (a 2-trial sweep planned as 1; CI, 2026-12-06)."""
    counts: Counter = Counter()
    unmatched = 0
    for node in alive:
        if "node:__internal_head__" in node:
            continue
        kind = next((name for name, res in specs.items() if res and all(
            abs(node.get(k, 0.0) - v) < 1e-6 for k, v in res.items()
            if k not in ("memory", "object_store_memory"))), None)  # fmt: skip
        if kind is None:
            unmatched += 1
        else:
            counts[kind] += 1
    return counts, unmatched


def failed_launches() -> list[str]:
    report = autoscaling_status().get("autoscaler_report") or {}
    return [f"{name} ({ip})" for ip, name, *_ in report.get("failed_nodes") or []]


def autoscaler_config() -> tuple[dict | None, str]:
    """The autoscaler's cluster config ({"available_node_types": …, "max_workers": …,
    "head_node_type": …}) and where it was read; (None, why) on a cluster without one."""
    from ray._private.state import state

    try:
        reported = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older GCS without it: read the file instead
        reported = None
    if reported is not None and reported.node_group_configs:
        kinds = {g.name: {"resources": dict(g.resources), "max_workers": g.max_count}
                 for g in reported.node_group_configs}  # fmt: skip
        return {"available_node_types": kinds}, "the cluster config in the GCS"
    head = next((n for n in alive_nodes() if "node:__internal_head__" in n["Resources"]), None)
    if head is None:
        return None, "no head node"
    gcs_port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[-1]
    if ray.get_runtime_context().get_node_id() == head["NodeID"]:
        found = monitor_config(gcs_port)
    else:  # this driver is not on the head (a client): ask a task there
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = ray.remote(monitor_config).options(
            num_cpus=0, max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(head["NodeID"], soft=False))  # fmt: skip
        found = ray.get(task.remote(gcs_port), timeout=120)
    return found if found[0] else (None, found[1])


def monitor_config(gcs_port: str) -> tuple[dict | None, str]:
    """On the head: the config file of the autoscaler monitor of the GCS on `gcs_port` (read
    from the monitor's command line), parsed; (None, why) when its monitor has none."""
    import psutil
    import yaml

    why = "no autoscaler monitor on the head"
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmd = proc.info.get("cmdline") or []
        # the autoscaler's monitor.py — not the log_monitor.py that every node runs with the same
        # --gcs-address (matched first once a worker node's PID sorted before the monitor's, the
        # head read as having no autoscaler: the rehearsal, with trainer nodes up, 2026-12-07)
        if not any(os.path.basename(part) == "monitor.py" for part in cmd[:3]):
            continue
        args = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
        if args.get("gcs-address", "").rsplit(":", 1)[-1] != gcs_port:
            continue
        path = args.get("autoscaling-config")
        if not path:
            why = "no autoscaler (the head was started without --autoscaling-config)"
            continue
        file = Path(os.path.expanduser(path))
        if not file.is_absolute():
            file = Path(proc.info.get("cwd") or "/") / file
        return yaml.safe_load(file.read_text()), f"the autoscaler's config {file}"
    return None, why


# ---- waiting for the autoscaler ----------------------------------------------------------------


def wait_for(need: Need, cap: Capacity, launch: dict[str, int], minutes: float,
             say=print) -> float:  # fmt: skip
    """Ask the autoscaler for the nodes `launch` names by placing what `need` will use in
    placement groups — its workers' bundles as Ray Train places them, and its decoding's CPUs
    (on the decode nodes when it has a decode resource) — print one line every SAY_EVERY_S
    while they come, give the resources back once they are there. Returns the seconds waited;
    after `minutes` a ResourceError says what came and what did not (nothing of the run exists
    yet)."""
    from ray.util.placement_group import placement_group, remove_placement_group

    # (bundles, strategy) of each placement group, placed one after the other: the decoding's
    # first when it goes to decode nodes, so that its CPUs there are taken before the workers'
    # bundles are placed (Ray puts CPU-only workers on any node with room, decode nodes too)
    marker = {need.decode: DECODE_SHARE} if need.decode else {}
    workers = max(1, len(need.bundles))
    data = [{"CPU": need.data_cpus / workers, **marker}] * workers if need.data_cpus > 0 else []
    if marker and not data and not any(need.decode in b for b in need.bundles):
        data = [marker]
    specs = [(list(need.bundles), need.strategy), (data, "PACK")]
    if marker:
        specs.reverse()
    specs = [(bundles, strategy) for bundles, strategy in specs if bundles]
    started = time.monotonic()
    before = {n["NodeID"] for n in alive_nodes()}
    wanted = sum(launch.values())
    what = f"{describe_plan(launch)} for {need.what}"

    def up() -> int:
        return min(len({n["NodeID"] for n in alive_nodes()} - before), wanted)

    def progress(now: float) -> str:
        return f"{what} — {up()}/{wanted} up, {_mmss(now - started)}"

    say(f"waiting for the autoscaler: {progress(started)}", flush=True)
    next_say, deadline = started + SAY_EVERY_S, started + minutes * 60
    groups = []
    try:
        for bundles, strategy in specs:
            groups.append(pg := placement_group(bundles, strategy=strategy))
            while not pg.wait(timeout_seconds=max(0.1, min(1.0, deadline - time.monotonic()))):
                now = time.monotonic()
                if now > deadline:
                    failed = failed_launches()
                    raise ResourceError(
                        f"the autoscaler did not bring up {what} within {minutes:g} min "
                        f"({up()}/{wanted} up"
                        + (f"; failed launches: {', '.join(failed)}" if failed else "")
                        + "): nothing was started or written. `ray status` on the head says "
                        "what it is doing; wait longer with --node-wait MINUTES "
                        "(run.node_wait_minutes)")  # fmt: skip
                if now >= next_say:
                    say(f"waiting for the autoscaler: {progress(now)}", flush=True)
                    next_say = now + SAY_EVERY_S
    finally:
        for pg in groups:
            remove_placement_group(pg)
    waited = time.monotonic() - started
    say(f"the autoscaler brought up {describe_plan(launch)} for {need.what} in "
        f"{_mmss(waited)}", flush=True)  # fmt: skip
    return waited


def _mmss(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s"


def ensure(need: Need, minutes: float, say=print) -> dict[str, int]:
    """`need` placeable now, or once the autoscaler adds nodes (then asked for and waited on);
    a ResourceError at once when the cluster can never hold it. Returns what was launched."""
    cap = read()
    launch = cap.plan(need)
    if launch is None:
        raise ResourceError(impossible(need, cap))
    if launch:
        wait_for(need, cap, launch, minutes, say)
    return launch


def impossible(need: Need, cap: Capacity) -> str:
    """Why `need` never fits `cap`, with the numbers and what to change."""
    if need.decode and shortfall(need, [*cap.alive, *(t.resources for t in cap.types)])[0]:
        where = ("no node type of its autoscaler carries it either" if cap.autoscaling
                 else f"the cluster has no autoscaler to add one ({cap.source})")  # fmt: skip
        return (f"no alive node carries the Ray resource '{need.decode}' that "
                f"run.decode_resource (--decode-on) sends the decoding to, and {where}; "
                f"{cap.describe()}. Start nodes with it (cluster.yaml's cpu-decode nodes carry "
                "`decode`), or drop --decode-on")  # fmt: skip
    room = most_workers(need, [*cap.alive, *largest_new(cap)])
    fix = ("Use fewer workers (--workers / run.num_workers), smaller run.cpus_per_worker / "
           "run.data_cpus_per_worker, or add nodes")  # fmt: skip
    if cap.autoscaling:
        fix += " (max_workers in the cluster config)"
    at = " at its largest" if cap.autoscaling else ""
    return (f"{need.what_asks} asks for {need.asked()}, but {cap.describe()}: room for {room} "
            f"workers{at}. {fix}.")


def most_workers(need: Need, nodes: list[dict]) -> int:
    """The most of `need`'s workers (with their share of its data CPUs) that `nodes` hold."""
    n = len(need.bundles)
    for k in range(n, 0, -1):
        part = Need(need.bundles[:k], need.strategy, need.data_cpus * k / n, need.decode)
        if not any(shortfall(part, nodes)[1:]):
            return k
    return 0


def largest_new(cap: Capacity) -> list[dict]:
    """Every node the autoscaler may still add (within the cluster-wide limit)."""
    out: list[dict] = []
    left = max(0, cap.max_workers - cap.running)
    for t in cap.types:
        out += [dict(t.resources)] * max(0, min(t.launchable, left - len(out)))
    return out
