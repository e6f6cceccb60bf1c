"""The cluster's secrets, generated once on the machine that runs `ray up` (`vidtempo
cluster-secrets`), kept out of the repository and of every log:

    ~/.vidtempo/secrets/ray_auth_token   Ray's token (token authentication on every node)
    ~/.vidtempo/secrets/cluster.env      RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH, the MLflow
                                         server's login (MLFLOW_TRACKING_USERNAME / _PASSWORD)
                                         and its CSRF key

cluster.yaml's file_mounts copy the folder to every node, whose ~/vidtempo.env sources
cluster.env before `ray start`: the head's MLflow server takes its admin password from it, job
drivers and training workers inherit the login and Ray's token mode. The same file, sourced on
the laptop, lets `ray job submit`, `ray dashboard`, `vidtempo ui` and `vidtempo zoo compare`
authenticate. Files are created with mode 600 in a 700 folder and never overwritten; the values
are never printed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRETS_DIR = Path("~/.vidtempo/secrets")
TOKEN_FILE = "ray_auth_token"
ENV_FILE = "cluster.env"
MLFLOW_USER = "vidtempo"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def create(folder: str | Path = SECRETS_DIR) -> dict[str, str]:
    """Make the token and the env file when missing; returns {file: "created" | "kept"}."""
    from ray._private.authentication.authentication_token_generator import (
        generate_new_authentication_token,
    )

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    done = {}
    token = folder / TOKEN_FILE
    if token.exists():
        done[str(token)] = "kept"
    else:
        _write_private(token, generate_new_authentication_token())
        done[str(token)] = "created"
    env = folder / ENV_FILE
    try:  # the same path on every node: $HOME differs from machine to machine
        token_path = f"$HOME/{token.relative_to(Path.home())}"
    except ValueError:
        token_path = str(token)
    if env.exists():
        done[str(env)] = "kept"
    else:
        password = secrets.token_urlsafe(24)
        _write_private(env, "\n".join([
            "# vidtempo cluster secrets (vidtempo cluster-secrets); never commit or print this",
            "export RAY_AUTH_MODE=token",
            f'export RAY_AUTH_TOKEN_PATH="{token_path}"',
            f"export MLFLOW_TRACKING_USERNAME={MLFLOW_USER}",
            f"export MLFLOW_TRACKING_PASSWORD={password}",
            "# the MLflow server's admin (the same login): read once, when its user store is made",
            'export MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD"',
            "# the MLflow server's key for its CSRF tokens (basic-auth app)",
            f"export MLFLOW_FLASK_SERVER_SECRET_KEY={secrets.token_hex(16)}",
            "",
        ]))  # fmt: skip
        done[str(env)] = "created"
    return done
