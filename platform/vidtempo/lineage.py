"""Where a run comes from: the code that made it, the command, the user, the Ray job.

    tags, diff = lineage.collect()      # MLflow tags, and the uncommitted diff ("" when clean)

The code is the checkout's git commit and its uncommitted changes (`git diff HEAD`, plus the
names of untracked files). A `ray job submit --working-dir .` copy has no `.git`, so the
submitting side records them in the job's environment:

    ray job submit --working-dir . --runtime-env-json "$(vidtempo runtime-env)" -- python jobs/…

`vidtempo runtime-env` prints {"env_vars": {VIDTEMPO_GIT_COMMIT, VIDTEMPO_GIT_DIRTY,
VIDTEMPO_GIT_DIFF, VIDTEMPO_SUBMITTED_BY}} from the checkout it runs in; the driver reads them
when it finds no `.git` of its own. Without either, the commit tag says `unknown`.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from vidtempo.config import PROJECT_DIR

ENV_COMMIT = "VIDTEMPO_GIT_COMMIT"
ENV_DIRTY = "VIDTEMPO_GIT_DIRTY"
ENV_DIFF = "VIDTEMPO_GIT_DIFF"
ENV_USER = "VIDTEMPO_SUBMITTED_BY"
# an environment variable travels through exec(), which refuses one string above 128 KiB
MAX_ENV_DIFF = 100_000
DIFF_ARTIFACT = "uncommitted.diff"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=20)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def source(root: Path | None = None) -> dict:
    """{"commit", "dirty", "diff", "from"}: from the environment `vidtempo runtime-env` set at
    submit time (it describes the working dir that was uploaded, whichever installed copy of
    vidtempo the job imports), else from the checkout's git, else unknown (dirty None)."""
    if os.environ.get(ENV_COMMIT):
        return {"commit": os.environ[ENV_COMMIT], "dirty": os.environ.get(ENV_DIRTY) == "true",
                "diff": os.environ.get(ENV_DIFF, ""), "from": "submit"}  # fmt: skip
    return checkout_source(root)


def checkout_source(root: Path | None = None) -> dict:
    """source() from the checkout's git alone ("from": "checkout", or "none" without one)."""
    root = root or PROJECT_DIR
    commit = _git(root, "rev-parse", "HEAD") if (root / ".git").exists() else None
    if commit:
        status = _git(root, "status", "--porcelain") or ""
        diff = ""
        if status.strip():
            untracked = [line[3:] for line in status.splitlines() if line.startswith("??")]
            diff = _git(root, "diff", "HEAD") or ""
            if untracked:
                diff += "".join(f"# untracked: {name}\n" for name in untracked)
        return {"commit": commit.strip(), "dirty": bool(status.strip()), "diff": diff,
                "from": "checkout"}  # fmt: skip
    return {"commit": "unknown", "dirty": None, "diff": "", "from": "none"}


def entry_point(argv: list[str] | None = None) -> str:
    """`vidtempo train`, `jobs/tin_sthv1.py`, …: what was started."""
    argv = sys.argv if argv is None else argv
    if not argv or not argv[0]:
        return "python"
    script = Path(argv[0])
    if script.name in ("vidtempo", "cli.py"):
        sub = [a for a in argv[1:3] if not a.startswith("-")]
        return " ".join(["vidtempo", *sub[:2 if sub[:1] in (["bench"], ["zoo"]) else 1]])
    try:
        return str(script.resolve().relative_to(_checkout_of(script)))
    except ValueError:
        return script.name


def _checkout_of(script: Path) -> Path:
    """The project folder a script lives in: this checkout, or a `ray job submit` copy of it."""
    for parent in script.resolve().parents:
        if (parent / "jobs").is_dir() and (parent / "platform").is_dir():
            return parent
    return PROJECT_DIR


def ray_submission_id() -> str | None:
    """The `ray job submit` id (raysubmit_…) when this driver runs as a Ray job."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return json.loads(raw).get("metadata", {}).get("job_submission_id")
    except (ValueError, AttributeError):
        return None


def user() -> str:
    if os.environ.get(ENV_USER):
        return os.environ[ENV_USER]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


_URL_LOGIN = re.compile(r"(\w+://)[^/\s:@]+:[^/\s@]+@")


def redact(text: str) -> str:
    """A URL's user:password@ (an MLflow or S3 URI typed with its login) becomes ***@."""
    return _URL_LOGIN.sub(r"\1***@", text)


def collect(root: Path | None = None) -> tuple[dict[str, str], str]:
    """The MLflow tags of this process's run, and the uncommitted diff to log with it."""
    src = source(root)
    tags = {
        "mlflow.source.git.commit": src["commit"],
        "mlflow.source.name": entry_point(),
        "mlflow.source.type": "JOB" if ray_submission_id() else "LOCAL",
        "mlflow.user": user(),
        "vidtempo.command": redact(shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]))[:5000],
        "vidtempo.source": src["from"],
        "vidtempo.dirty": "unknown" if src["dirty"] is None else str(src["dirty"]).lower(),
    }
    job = ray_submission_id()
    if job:
        tags["vidtempo.ray_job_id"] = job
    return tags, src["diff"]


def runtime_env(root: Path | None = None, verbose: bool = False) -> dict:
    """`ray job submit --runtime-env-json` that carries this checkout's lineage to the driver."""
    src = checkout_source(root)
    if src["from"] != "checkout":
        raise RuntimeError(f"{root} is not a git checkout: nothing to record")
    diff = src["diff"]
    if len(diff) > MAX_ENV_DIFF:
        diff = diff[:MAX_ENV_DIFF] + f"\n# [truncated: the diff has {len(src['diff'])} characters]\n"
    env = {ENV_COMMIT: src["commit"], ENV_DIRTY: str(src["dirty"]).lower(), ENV_USER: user()}
    if diff:
        env[ENV_DIFF] = diff
    if verbose:
        env["VIDTEMPO_VERBOSE"] = "1"
    return {"env_vars": env}

