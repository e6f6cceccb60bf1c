"""How much of Ray's own output a run prints.

By default the terminal shows vidtempo's lines (set-up, one line per epoch from rank 0, the
summary) and every warning and error; the INFO lines of Ray Train (each report and checkpoint,
the worker group's start) and Ray Data (each dataset's execution) go only to Ray's log files
under /tmp/ray/session_*/logs. `--verbose`, or VIDTEMPO_VERBOSE=1 in the environment of the
driver (`ray job submit --runtime-env-json '{"env_vars": {"VIDTEMPO_VERBOSE": "1"}}'`), brings
them back. This goes through Ray's own logging settings — Ray Train's `LoggingConfig`, Ray
Data's `RAY_DATA_LOG_LEVEL`, the log levels of the loggers in Ray's worker processes — never by
filtering printed text.
"""

from __future__ import annotations

import logging
import os

ENV = "VIDTEMPO_VERBOSE"


def verbose() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def set_verbose(on: bool) -> None:
    """For this process and what it starts (a local Ray instance, Tune trials)."""
    os.environ[ENV] = "1" if on else "0"


def log_level(on: bool | None = None) -> int:
    return logging.INFO if (verbose() if on is None else on) else logging.WARNING


def train_logging_config(on: bool | None = None):
    """Ray Train's own log level for its controller and workers (RunConfig.logging_config)."""
    import ray

    return ray.LoggingConfig(log_level=logging.getLevelName(log_level(on)))


def worker_env(on: bool | None = None) -> dict[str, str]:
    """Environment for Ray's worker processes: Ray Data reads its log level from it, MLflow
    whether to print a run's URL."""
    on = verbose() if on is None else on
    env = {"RAY_DATA_LOG_LEVEL": logging.getLevelName(log_level(on)), ENV: "1" if on else "0"}
    if not on:  # MLflow's '🧪 View experiment at: URL' from a sweep's trials
        env["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    return env


SETUP_HOOK = "vidtempo.verbosity.quiet_ray_worker"  # runtime_env's worker_process_setup_hook
# Ray Train's internal loggers whose warnings report normal events: the placement-group cleaner
# says "Detected that the Ray Train controller actor … is dead. Cleaning up placement group"
# every time Tune stops a trial (ASHA), and its own exit
QUIET_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def worker_runtime_env_extras(has_hook: bool = False) -> dict:
    """The quiet run's setup hook for every Ray worker process of the job, unless verbose or
    the job already has a hook of its own (`has_hook`: Ray allows one)."""
    if verbose() or has_hook:
        return {}
    return {"worker_process_setup_hook": SETUP_HOOK}


def quiet_ray_worker() -> None:
    """Run by Ray in each worker process of a quiet run, before any task or actor:
    - Ray Train's internal warnings about normal events (QUIET_LOGGERS) are not printed.
    - SIGABRT ends the process without a stack dump. When Tune stops a trial whose Train
      workers are inside a gloo all-reduce, the first worker killed makes its peers' gloo throw,
      and a worker that aborts printed Ray's C++ "*** SIGABRT received ***" stack and Python's
      "Fatal Python error: Aborted" dump — for a trial that ASHA stopped on purpose, which the
      sweep reports in one line ("stopped at epoch 2 by ASHA"). A worker that aborts for another
      reason still dies and Ray Train reports it (its exit, its log file under
      /tmp/ray/session_*/logs); --verbose keeps the dumps. SIGSEGV and the other signals keep
      their handlers."""
    import signal
    import threading

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGABRT, signal.SIG_DFL)


def quiet_driver() -> None:
    """This process's own chatter, unless verbose (set in its environment, which Ray Train hands
    its controller and workers):
    - Ray Train's preemption watcher, which in Ray 2.60 only logs node drains, is not started:
      its creation made the controller print an ERROR line at every run ("Actor with class name:
      'PreemptionWatcher' … has constructor arguments in the object store and max_restarts >
      0"). A lost node is handled as before (run.max_failures).
    - MLflow's '🏃 View run … at: URL' lines (vidtempo prints the run and the UI command itself).
    - Tune's new output engine, which prints its 'Configuration for experiment' box and a
      TensorBoard hint even when told to be silent (the legacy one, at verbose=0, prints nothing).
    (Quieting the workers' C++ log instead, RAY_BACKEND_LOG_LEVEL=fatal, made every new worker
    print "Set ray log level from environment variable": measured, reverted.)"""
    if verbose():
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def quiet_auth_notice() -> None:
    """Ray's once-per-start notice that it turned token authentication on (vidtempo's choice)."""
    if not verbose():
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )


def quiet_worker(on: bool) -> None:
    """In a Ray Train worker: Ray Train configures its root logger at INFO (its per-report lines
    come through a logger named after its source file, which only the root's level governs),
    and Ray Data logs each dataset's execution at INFO."""
    level = log_level(on)
    logging.getLogger().setLevel(level)
    logging.getLogger("ray.data").setLevel(level)
    # vidtempo turns Ray Data's progress bars off itself (data.pipeline.quiet); Ray Data warns
    # once per process that they are off — about our own setting, so only when verbose
    logging.getLogger("ray.data._internal.progress").setLevel(level if on else logging.ERROR)
