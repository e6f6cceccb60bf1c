"""The searchers of a sweep: Tune's random (and grid) generator, or Optuna's TPE — neither of them
training one point of a finite space twice.

Both draw with replacement: Tune's generator samples each `choice:` axis anew, and TPE suggests
again a combination it already saw. A point trained again with the same seed gives the same
result to the last bit, so a repeat is a trial spent for nothing (`vidtempo bench tune`, 8 trials
of 12 points: 5 repeats in 32 random and TPE trials, BENCHMARKS.md "6. Sweeps"). Here:
- random: when every axis is finite and not a grid (`choice:`, `randint:`), the trials are the
  space's points in a seeded random order, each once (`distinct_points`); past the space's size
  the generator draws as before;
- TPE: a suggestion of a point already drawn is answered at once with that trial's result (or
  as failed while it still runs) and TPE is asked again (`DistinctTPE`), so it learns from the
  repeat instead of training it.
"""

from __future__ import annotations

import itertools
import json
import random

from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from vidtempo.config import Config
from vidtempo.tune import space as S

MAX_POINTS = 10_000  # a finite space larger than this is sampled as before
REDRAWS = 20  # TPE suggestions of drawn points before a repeat is run after all


def distinct_points(space: dict[str, tuple], samples: int, seed: int) -> list[dict]:
    """Up to `samples` distinct points of a space whose axes are all finite and not grids, in a
    seeded random order; [] for any other space (or one too large to list)."""
    if not space or any(kind not in ("choice", "randint") for kind, _ in space.values()):
        return []
    axes = {key: S.values_to_check(kind, args) for key, (kind, args) in space.items()}
    size = 1
    for values in axes.values():
        size *= len(values)
    if size > MAX_POINTS:
        return []
    points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    random.Random(seed).shuffle(points)
    return points[:samples]


class DistinctTPE(OptunaSearch):
    """Optuna's TPE through Tune, never proposing a point it already proposed (see above)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._drawn: dict[str, str] = {}  # point → the trial that trains it
        self._values: dict[str, float] = {}  # trial → its last value of the metric

    def suggest(self, trial_id: str) -> dict | None:
        for _ in range(REDRAWS):
            params = super().suggest(trial_id)
            if params is None:
                return None
            point = json.dumps(params, sort_keys=True)
            first = self._drawn.get(point)
            if first is None:
                self._drawn[point] = trial_id
                return params
            # answered at once: the first trial's value, or failed while it runs
            value = self._values.get(first)
            super().on_trial_complete(trial_id, {self.metric: value} if value is not None else None,
                                      error=value is None)  # fmt: skip
            self._completed_trials.discard(trial_id)  # the id is asked for again, below
            del self._ot_trials[trial_id]
        return params  # every redraw was a drawn point: the space is spent, run the repeat

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result:
            self._values[trial_id] = result[self.metric]
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:  # fmt: skip
        if result and self.metric in result:
            self._values[trial_id] = result[self.metric]
        super().on_trial_complete(trial_id, result, error)


def make_search(base: Config, space: dict[str, tuple], search: str, samples: int, seed: int,
                metric: str, concurrent: int):  # fmt: skip
    """Random (and grid) search by Tune's generator, or TPE, their draws seeded by `seed`, at
    most `concurrent` trials at once, neither training a point of a finite space twice."""
    if search == "random":
        # the limit goes to the generator itself, since Tune ignores max_concurrent_trials next
        # to an explicit BasicVariantGenerator
        return BasicVariantGenerator(points_to_evaluate=distinct_points(space, samples, seed),
                                     random_state=seed, max_concurrent=concurrent)  # fmt: skip
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tpe = DistinctTPE(metric=metric, mode=base.eval.mode,
                      sampler=optuna.samplers.TPESampler(seed=seed))  # fmt: skip
    return ConcurrencyLimiter(tpe, max_concurrent=concurrent)
