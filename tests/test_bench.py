"""`vidtempo bench demo`'s own accounting: whose CPU time is whose, and the table it prints."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vidtempo.bench import demo as bench_demo

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n"


def test_cpu_meter_counts_each_process_in_its_group():
    """A child titled like a Ray Train worker and one titled like a decode task: each one's CPU
    second lands in its group, nothing in the other."""
    with bench_demo.CpuMeter() as meter:
        procs = [subprocess.Popen(["bash", "-c", f'exec -a "{title}" {sys.executable} -c "$0"',
                                   BURN]) for title in ("ray::RayTrainWorker",
                                                        "ray::MapBatches(ReadRowGroups)")]  # fmt: skip
        import time

        time.sleep(0.8)  # sampled while they run
        for p in procs:
            p.wait(timeout=30)
    got = meter.by_group()
    for group in ("train workers", "decode tasks"):
        used = got[group]["user"] + got[group]["system"]
        assert 0.3 < used < 1.5, (group, got)
    assert got["train workers"]["titles"] == {"ray::RayTrainWorker": got["train workers"]["titles"][
        "ray::RayTrainWorker"]}  # fmt: skip


def test_the_table_puts_the_demo_beside_the_bare_loop():
    cpu = {g: {"user": 1.0, "system": 0.5, "titles": {"x": 1.5}} for g in bench_demo.GROUPS}
    result = {"device": "cpu", "cpus": 2, "epochs": 3, "storage": "video", "models": {"TSN": {
        "config": "tsn_r18_synthetic", "steps_per_epoch": 72, "workers": 2, "batch": 8,
        "step_ms": 30.0, "bare_clips_per_s": 300.0,
        "epoch_cpu_s": {"decode": 4.0, "augment": 0.5, "train steps": 4.5, "validation": 1.0,
                        "checkpoint + report": 0.0},
        "demo": {"wall_s": 60.0, "cpu_s": cpu, "clips_per_s": [100.0, 150.0, 240.0],
                 "data_wait": [0.5, 0.1, 0.05]}}}}  # fmt: skip
    text = bench_demo.table(result)
    assert "| decode | 4.0 | 40% |" in text
    assert "**sum** (= 5.0 s of wall on 2 CPUs)" in text
    assert "**0.80×** the bare loop" in text  # the best epoch, 240 of 300
    assert "| train workers (x 2) | 1.5 | 0.5 | 25% |" in text


def test_bench_step_times_each_recipe_against_tsn_in_the_same_run():
    """`vidtempo bench step`: TSN is always timed (the ratios are to it), every model's time is
    the best of its round medians, and the table prints each ratio."""
    from vidtempo.bench import step

    r = step.run(batch=2, rounds=2, repeats=1, warmup=0, only=["TIN"])
    rows = {row["model"]: row for row in r["rows"]}
    assert set(rows) == {"TSN", "TIN"}
    assert rows["TSN"]["vs_TSN"] == 1.0
    for row in rows.values():
        assert len(row["round_medians_ms"]) == 2
        assert row["ms_per_step"] == min(row["round_medians_ms"])
    assert rows["TIN"]["vs_TSN"] == rows["TIN"]["ms_per_step"] / rows["TSN"]["ms_per_step"]
    tin, tsn = rows["TIN"]["round_medians_ms"], rows["TSN"]["round_medians_ms"]
    assert rows["TIN"]["vs_TSN_per_round"] == pytest.approx((tin[0] / tsn[0] + tin[1] / tsn[1]) / 2)
    text = step.table(r)
    assert "| TIN | tin_r18_synthetic |" in text and f"{rows['TIN']['vs_TSN']:.2f}x" in text
    assert f"{rows['TIN']['vs_TSN_per_round']:.2f}x |" in text


def test_bench_shuffle_batches_hold_the_classes_of_a_global_shuffle():
    """On a class-sorted list, shards in the seeded order give each worker's batches the classes
    a global shuffle gives (within 5%); shards in list order do not (the measure discriminates)."""
    from vidtempo.bench import shuffle

    r = shuffle.run(classes=100, per_class=16, world=4, batch=8, epochs=3)["rows"]
    assert r["global shuffle"]["distinct_ratio"] == 1.0
    assert r["shuffled"]["distinct_ratio"] >= 0.95 and abs(r["shuffled"]["shared_excess"]) <= 0.05
    assert r["list order"]["distinct_ratio"] < 0.9 and r["list order"]["shared_excess"] > 0.1


def test_bench_plan_each_rank_makes_its_own_units_only():
    """The bench checks that a rank's own plan equals its share of the whole one (and the
    driver's count the whole plan's); a rank's plan then holds about 1/world of the memory."""
    from vidtempo.bench import plan

    r = plan.run(videos=4000, epochs=20, world=8, rounds=1)
    assert r["units_per_rank"] == 20 * 63  # 500 row groups: rank 0 deals 63 an epoch
    assert r["rows"]["a worker's dataset plan (each rank, each start)"]["memory_ratio"] > 3
    assert r["rows"]["the driver's steps per epoch"]["memory_ratio"] > 2  # its row groups stay
