"""`vidtempo doctor`: what a job would meet on the cluster, checked before it is submitted.

    report = check(cfg, working_dir=".")     # connects to RAY_ADDRESS (or starts a local Ray)
    print(render(report)); exit 0 if report["ok"] else 1

1. the working directory `ray job submit --working-dir` would upload (Ray's own walk, honouring
   .gitignore and .rayignore): size, file count, the biggest entries, against Ray's limit;
2. on every alive node, by a task pinned to it: vidtempo importable, the tin_shift op built
   (and its CUDA kernel where the node has GPUs), GPUs, the storage root writable and readable,
   the MLflow tracking server answering;
3. the run against the cluster: the nodes its autoscaler will add for it (on a cold cluster:
   what `train` will wait for), or why the cluster can never hold it; and the multi-node rule
   of `fit`: a local storage path or a SQLite tracking URI on a run that spans nodes;
4. on a cluster (not a local instance doctor starts itself): Ray's token authentication on
   every node and on the dashboard, and a tracking server that refuses anonymous requests.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import ray

from vidtempo import capacity, storage
from vidtempo.config import Config, ConfigError
from vidtempo.preflight import check_cluster, settle, spans, storage_root
from vidtempo.ray_session import ensure_ray
from vidtempo.tracking import store


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def working_dir(path: str | Path, top: int = 5) -> dict:
    """What `ray job submit --working-dir PATH` would upload, walked as Ray walks it."""
    from ray._private.runtime_env import packaging

    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"working dir {root} is not a folder")
    files: list[tuple[str, int]] = []

    def visit(p: Path) -> None:
        if p.is_file():
            files.append((str(p.relative_to(root)), p.stat().st_size))

    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    quiet = logging.getLogger("vidtempo.doctor")  # Ray logs every ignore file it honours
    quiet.setLevel(logging.WARNING)
    packaging._dir_travel(root, [packaging._get_excludes(root, [])], visit,
                          include_gitignore=include_gitignore, logger=quiet)  # fmt: skip
    by_entry: dict[str, list[int]] = {}
    for rel, size in files:
        entry = by_entry.setdefault(rel.split("/", 1)[0], [0, 0])
        entry[0] += size
        entry[1] += 1
    total = sum(s for _, s in files)
    limit = packaging.GCS_STORAGE_MAX_SIZE
    return {
        "path": str(root), "files": len(files), "bytes": total, "limit": limit,
        "ok": total < limit,
        "entries": sorted(((k, v[0], v[1]) for k, v in by_entry.items()), key=lambda e: -e[1])[:top],
        "largest": sorted(files, key=lambda f: -f[1])[:top],
    }  # fmt: skip


def probe(root: str, uri: str, data: str | None = None) -> dict:
    """Runs on one node: the op, the GPUs, storage and tracking as that node sees them, and
    (with `data`) whether it can read the dataset's shards."""
    out = {"hostname": socket.gethostname(), "ip": ray.util.get_node_ip_address()}
    try:
        import torch

        from vidtempo.ops import native

        out.update(vidtempo="ok", torch=torch.__version__, op=native.load() is not None,
                   op_cuda=native.has_cuda_kernel(), why=native.why_not() or "")  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the diagnosis
        out.update(vidtempo=f"not importable: {exc}", op=False, op_cuda=False, why=str(exc))
    marker = storage.join(root, ".vidtempo-doctor", f"{uuid.uuid4().hex}.txt")
    try:
        storage.write_bytes(marker, out["hostname"].encode())
        assert storage.read_bytes(marker) == out["hostname"].encode(), "read back something else"
        storage.delete(marker)
        out["storage"] = "ok"
    except Exception as exc:  # noqa: BLE001
        out["storage"] = f"FAIL: {type(exc).__name__}: {exc}"
    out["tracking"] = check_tracking(uri)
    out["ray_auth"] = ray_auth_mode()
    if data:
        out["data"] = check_data_readable(data)
    return out


def check_data_readable(data: str) -> str:
    """The train split's manifest and first shard, read as a decode task would read them."""
    import json

    try:
        raw = storage.read_bytes(storage.join(data, "train", "manifest.json"))
        if raw is None:
            return f"FAIL: no train/manifest.json under {data}"
        manifest = json.loads(raw)
        first = manifest["shards"][0]["file"]
        size = len(storage.read_bytes(storage.join(data, "train", first)) or b"")
        return f"ok ({manifest['num_videos']} videos; {first} {size / 2**20:.1f} MiB read)"
    except Exception as exc:  # noqa: BLE001 - reported: this is the diagnosis
        return f"FAIL: {type(exc).__name__}: {exc}"


def ray_auth_mode() -> str:
    """'token' or 'disabled': the authentication mode of the Ray node this process belongs to."""
    from ray._raylet import AuthenticationMode, get_authentication_mode

    return "token" if get_authentication_mode() == AuthenticationMode.TOKEN else "disabled"


def anonymous_status(url: str, data: bytes | None = None) -> int:
    """The HTTP status an unauthenticated request gets (0: no answer)."""
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def check_security(uri: str, dashboard_url: str | None) -> list[str]:
    """Problems of a cluster open to whoever reaches it: Ray's dashboard / Jobs API without a
    token (anyone may submit a job: run code on every node) and a tracking server that takes
    anonymous requests."""
    problems = []
    if dashboard_url:
        url = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
        status = anonymous_status(f"{url.rstrip('/')}/api/jobs/")
        if status == 200:
            problems.append(
                f"Ray's dashboard {url} answers the Jobs API without a token (HTTP 200): anyone "
                "who reaches port 8265 can run code on every node. Start every node with "
                "RAY_AUTH_MODE=token and the same token (cluster.yaml does: `vidtempo "
                "cluster-secrets`, then `ray up cluster.yaml`)")  # fmt: skip
    if uri.startswith(("http://", "https://")):
        status = anonymous_status(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
                                  data=b'{"max_results": 1}')  # fmt: skip
        if status == 200:
            problems.append(
                f"the tracking server {uri} answers requests without a login (HTTP 200 to an "
                "anonymous experiments/search): run it as `mlflow server --app-name basic-auth` "
                "(cluster.yaml does) and give drivers and workers MLFLOW_TRACKING_USERNAME / "
                "MLFLOW_TRACKING_PASSWORD")  # fmt: skip
    return problems


def check_tracking(uri: str) -> str:
    if store.is_server(uri):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as r:
                return "ok" if r.status == 200 else f"FAIL: HTTP {r.status}"
        except OSError as exc:
            return f"FAIL: {exc}"
    db = store.sqlite_path(uri)
    if db is not None:
        folder = db.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return "ok (local file)" if os.access(folder, os.W_OK) else f"FAIL: {folder} not writable"
    return "not checked"


def check(cfg: Config, working: str | Path | None = None, address: str | None = None,
          timeout_s: float = 180, data: str | None = None) -> dict:  # fmt: skip
    """`data`: the dataset a run will read (a path every node sees, or an s3:// / gs:// URI);
    the nodes that decode — those carrying run.decode_resource, else all — must read it."""
    report: dict = {"ok": True, "problems": []}
    if working is not None:
        report["working_dir"] = wd = working_dir(working)
        if not wd["ok"]:
            report["problems"].append(
                f"the working dir is {_mib(wd['bytes'])}, over Ray's {_mib(wd['limit'])} limit: "
                "list big folders (data, runs, .git) in .gitignore or .rayignore"
            )
    ensure_ray(address)
    cfg = settle(cfg)  # the decode CPUs a run of it would ask for on this cluster
    root, uri = storage_root(cfg), store.resolve_uri(cfg)
    cap, need = capacity.read(), capacity.Need.for_run(cfg)
    launch = cap.plan(need)
    report.update(storage=root, tracking=uri, spans=spans(cap, launch or {}),
                  cluster=cap.describe(), launch=launch, autoscaler=cap.source,
                  notes=list(cap.notes))  # fmt: skip
    if launch is None:
        report["problems"].append(capacity.impossible(need, cap))
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    # this machine's own one-node instance (vidtempo binds its dashboard to 127.0.0.1) is not a
    # cluster: the authentication checks are for clusters others can reach
    local = not (address or os.environ.get("RAY_ADDRESS")) and len(nodes) == 1
    decode = cfg.run.decode_resource
    decoders = {n["NodeID"] for n in nodes if not decode or n["Resources"].get(decode)}
    probes = {}
    for n in nodes:
        strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)  # fmt: skip
        reads = data if data and n["NodeID"] in decoders else None
        probes[n["NodeID"]] = ray.remote(probe).options(
            num_cpus=0, scheduling_strategy=strategy, max_retries=0).remote(root, uri, reads)  # fmt: skip
    deadline = time.monotonic() + timeout_s
    rows = []
    for n in nodes:
        res = n["Resources"]
        row = {"node_id": n["NodeID"], "ip": n.get("NodeManagerAddress", "?"),
               "head": "node:__internal_head__" in res, "cpus": res.get("CPU", 0),
               "gpus": res.get("GPU", 0), "decode": bool(decode and res.get(decode))}  # fmt: skip
        try:
            row.update(ray.get(probes[n["NodeID"]], timeout=max(1, deadline - time.monotonic())))
        except Exception as exc:  # noqa: BLE001
            row.update(vidtempo=f"FAIL: {type(exc).__name__}", op=False, op_cuda=False,
                       why=str(exc).splitlines()[0] if str(exc) else "", storage="?", tracking="?")  # fmt: skip
        rows.append(row)
        where = f"node {row['ip']}"
        if row.get("vidtempo") != "ok":
            report["problems"].append(f"{where}: vidtempo {row.get('vidtempo')} — install it "
                                      "there (cluster.yaml setup_commands)")  # fmt: skip
        elif not row["op"]:
            report["problems"].append(f"{where}: the tin_shift op is not built ({row['why']}); "
                                      "pip install --no-build-isolation -e . builds it")  # fmt: skip
        elif row["gpus"] and not row["op_cuda"]:
            report["problems"].append(
                f"{where} has {row['gpus']:g} GPUs but the op has no CUDA kernel: rebuild with "
                "CUDA_HOME=/usr/local/cuda VIDTEMPO_BUILD_CUDA=1 pip install --no-build-isolation -e ."
            )
        for what in ("storage", "tracking", "data"):
            if str(row.get(what, "")).startswith("FAIL"):
                target = {"storage": root, "tracking": uri, "data": data}[what]
                report["problems"].append(f"{where}: {what} {target}: {row[what]}")
        if not local and row.get("ray_auth") == "disabled":
            report["problems"].append(
                f"{where}: Ray runs without token authentication (RAY_AUTH_MODE=disabled): set "
                "RAY_AUTH_MODE=token before `ray start` on every node (cluster.yaml's "
                "~/vidtempo.env does)")  # fmt: skip
    report["nodes"] = rows
    # a local instance doctor started itself is this machine's own business (bound to 127.0.0.1)
    report["security"] = "local instance: not checked" if local else "checked"
    if not local:
        report["problems"] += check_security(uri, _dashboard_url())
    try:
        check_cluster(cfg, root, uri, report["spans"])
    except ConfigError as exc:
        report["problems"].append(str(exc))
    report["ok"] = not report["problems"]
    return report


def _dashboard_url() -> str | None:
    try:
        return ray._private.worker.global_worker.node.address_info.get("webui_url")
    except AttributeError:  # a client connection has no local node
        return None


def launch_line(launch: dict | None) -> str:
    if launch is None:
        return "the cluster can never hold it (below)"
    if not launch:
        return "fits the nodes that are up"
    return (f"the autoscaler will add {capacity.describe_plan(launch)} when it starts "
            "(the run waits for them; only the nodes up now are checked here)")


def render(report: dict) -> str:
    lines = []
    wd = report.get("working_dir")
    if wd:
        lines += [f"working dir {wd['path']}: {wd['files']} files, {_mib(wd['bytes'])} would be "
                  f"uploaded by `ray job submit --working-dir` (Ray's limit {_mib(wd['limit'])})"
                  + ("" if wd["ok"] else "  — TOO BIG"),
                  "  biggest entries: " + ", ".join(f"{n} {_mib(b)} ({c} files)"
                                                    for n, b, c in wd["entries"]),
                  "  biggest files:   " + ", ".join(f"{n} {_mib(b)}" for n, b in wd["largest"]),
                  ""]  # fmt: skip
    rows = report["nodes"]
    lines += [f"cluster: {len(rows)} node(s); storage {report['storage']}; tracking "
              f"{report['tracking']}; security: {report.get('security', '?')}",
              f"autoscaler: {report.get('autoscaler', '?')}; {report.get('cluster', '')}",
              *(f"  note: {n}" for n in report.get("notes", [])),
              f"the run: {launch_line(report.get('launch'))}", "",
              "| node | role | CPUs | GPUs | vidtempo | tin_shift op | CUDA kernel | storage | "
              "tracking | Ray auth | data |", "|---|---|---:|---:|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['ip']} ({r.get('hostname', '?')}) | "
            f"{'head' if r['head'] else ('decode' if r.get('decode') else 'worker')} | "
            f"{r['cpus']:g} | {r['gpus']:g} | {r.get('vidtempo')} | "
            f"{'built' if r.get('op') else 'MISSING'} | "
            f"{'yes' if r.get('op_cuda') else ('MISSING' if r['gpus'] else 'no (no GPU)')} | "
            f"{r.get('storage')} | {r.get('tracking')} | {r.get('ray_auth', '?')} | "
            f"{r.get('data', '-')} |"
        )
    lines.append("")
    if report["problems"]:
        lines += ["problems:", *(f"  - {p}" for p in report["problems"])]
    else:
        lines.append("all checks passed")
    return "\n".join(lines)
