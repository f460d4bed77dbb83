"""`segnet reproduce all --budget`: priorities, planning, runs, a kill at any moment, the
bundle and its import into the docs. On CPU, with synthetic scenes at tiny sizes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SUBPROCESS_SCENES
from segnet.cli import main
from segnet.reproduce.budget import (PlannedRun, in_child, measure_side_by_side, parse_budget, plan_runs,
                                     priority_runs, reproduce_all, stop_time)
from segnet.reproduce.bundle import BUNDLE_FILES, gpu_targets, import_bundle

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
TINY = {"size": [32, 48], "bn_recompute": False}


class Clock:
    """A clock for the planner that moves only when the test says (``step`` seconds at every
    reading, 0 by default): no outcome depends on how fast this machine is. A module-level
    class, so that the processes of a side-by-side group can unpickle it."""

    def __init__(self, now: float = 1000.0, step: float = 0.0):
        self.now, self.step = now, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def fixed_costs(epoch_seconds: float = 1.0):
    """A stand-in for ``measure_runs``: every run costs ``epoch_seconds`` per epoch and
    almost nothing else, whatever this machine's speed."""
    from segnet.data import build_dataset

    def measure(runs, dataset, root, device, overrides, steps, progress):
        splits = {split: build_dataset(dataset, root, split) for split in ("train", "val", "test")}
        for run in runs:
            run.train_images, run.val_images, run.test_images = (len(splits[s]) for s in ("train", "val", "test"))
            run.train_images_per_s = run.train_images / epoch_seconds
            run.inference_seconds_per_image = run.bf_seconds_per_image = 0.001
            run.load_seconds_per_image, run.save_seconds, run.val_every = 0.0, 0.01, 10
        label = splits["train"][0][1]
        return {"frame": list(label.shape[-2:]), "num_classes": splits["train"].meta.num_classes,
                "bf_seconds_per_image": 0.001, "load_seconds_per_image": 0.0, "device": str(device)}
    return measure


def _run(name: str, tier: int, protocol: int, epoch_seconds: float) -> PlannedRun:
    # 100 training images at 100/epoch_seconds images/s; validation, testing and saving free
    run = PlannedRun(name, name, "paper-basic", tier, (1.0, 2.0, 3.0, 4.0), "note", protocol, train_images=100,
                     train_images_per_s=100 / epoch_seconds)
    return run


def test_budget_parses_units_and_refuses_nonsense():
    assert parse_budget("90s") == 90 and parse_budget("25m") == 1500 and parse_budget("1.5h") == 5400
    assert parse_budget("42") == 42
    for bad in ("", "soon", "-5m", "0", "nanm"):
        with pytest.raises(ValueError, match="--budget"):
            parse_budget(bad)


def test_priority_order_is_the_issues_and_covers_the_paper():
    runs = priority_runs()
    assert [run.name for run in runs[:3]] == ["segnet_basic", "segnet", "segnet-pretrained"]
    assert [run.tier for run in runs] == sorted(run.tier for run in runs)  # tiers never go back
    assert len([r for r in runs if r.tier == 3]) == 7  # the other Table 1 variants
    assert {r.model for r in runs if r.tier == 4} == {"fcn8s", "fcn_bilinear", "deeplab_largefov", "deconvnet"}
    assert runs[0].paper == (82.7, 62.0, 47.7, 35.78) and runs[0].protocol_epochs == 200
    assert [r.name for r in priority_runs(["fcn_basic", "segnet_basic"])] == ["segnet_basic", "fcn_basic"]
    with pytest.raises(ValueError, match="resnet: not in the paper's tables"):
        priority_runs(["resnet"])


def test_plan_gives_the_protocol_when_it_fits_and_the_same_fraction_when_not():
    runs = [_run("a", 1, 200, 1.0), _run("b", 2, 300, 2.0), _run("c", 3, 200, 0.5)]
    plan_runs(runs, seconds=10_000)  # 200 + 600 + 100 s: everything at full length
    assert [r.epochs for r in runs] == [200, 300, 200]
    plan_runs(runs, seconds=450)  # half of 900 s: every run at the same fraction of its recipe
    assert [r.epochs for r in runs] == [100, 150, 100]
    assert sum(r.seconds(r.epochs) for r in runs) <= 450
    plan_runs(runs, seconds=2.6, min_epochs=1)  # a=1 s, b=2 s: c (0.5 s) does not fit after them
    assert [r.epochs for r in runs] == [1, 0, 0] or sum(r.seconds(r.epochs) for r in runs) <= 2.6
    assert runs[0].epochs >= 1 and runs[2].epochs == 0  # the lowest priority is dropped first
    plan_runs(runs, seconds=0.5)
    assert [r.epochs for r in runs] == [0, 0, 0]
    # side by side: credited by the measured speedup
    small = [_run("x", 3, 100, 1.0), _run("y", 3, 100, 1.0)]
    for run in small:
        run.side_by_side = True
    plan_runs(small, seconds=100, side_by_side_speedup=2.0)
    assert [r.epochs for r in small] == [100, 100]


def test_a_run_that_outlasts_its_estimate_leaves_the_later_runs_their_minimum():
    # as on the H200: SegNet's paper recipe planned for 151 epochs ran past its estimate and,
    # allowed up to the deadline, left nothing for the `pretrained` run planned after it
    first, second, third = _run("paper", 2, 300, 1.0), _run("pretrained", 2, 100, 0.5), _run("late", 3, 10, 2.0)
    first.epochs, second.epochs, third.epochs = 150, 50, 0  # the third was not planned
    first.test_images, first.inference_seconds_per_image, first.bf_seconds_per_image = 10, 0.1, 0.4
    # plenty of time: half as long again as its estimate (150 s of epochs, 10 s of BN pass over
    # its 100 training images, 5 s of testing)
    assert first.seconds(150) == pytest.approx(165.0)
    assert stop_time(first, [second, third], now=0.0, end=1000.0) == pytest.approx(247.5)
    # tight: it stops in time for its own test (5 s) and one epoch of the next (0.5 s)
    assert stop_time(first, [second, third], now=0.0, end=160.0) == pytest.approx(160.0 - 5.0 - 0.5)
    assert stop_time(first, [second], now=0.0, end=160.0, min_epochs=4) == pytest.approx(160.0 - 5.0 - 2.0)
    assert stop_time(first, [], now=0.0, end=160.0) == pytest.approx(155.0)
    first.side_by_side = True  # sharing the device: credited by the speedup, plus a process start
    assert stop_time(first, [], now=0.0, end=1000.0, side_by_side_speedup=2.0) == pytest.approx(247.5 / 2 + 15)


def test_estimates_count_validation_testing_loading_and_saving():
    run = _run("a", 1, 10, 1.0)
    assert run.seconds(10) == pytest.approx(10.0)
    run.val_images, run.test_images, run.val_every = 10, 20, 5
    run.inference_seconds_per_image, run.bf_seconds_per_image = 0.1, 0.05
    run.load_seconds_per_image, run.save_seconds = 0.01, 0.2
    # train 10; 2 validations of 10 images + a save each; BN pass over 110 images; test 20 x 0.15;
    # loading 130 images; a save after every epoch
    expected = 10 + 2 * (1 + 0.2) + 110 * 0.1 + 20 * 0.15 + 130 * 0.01 + 10 * 0.2
    assert run.seconds(10) == pytest.approx(expected)
    assert run.seconds(0) == 0


@pytest.mark.slow
def test_reproduce_all_plans_runs_labels_bundles_and_imports(tmp_path, capsys, few_scenes):
    from segnet.benchmark import run_benchmark, write_benchmark

    out = tmp_path / "all"
    # the benchmark of an earlier try is kept (and bundled)
    out.mkdir()
    write_benchmark(run_benchmark(["segnet_basic", "fcn_basic"], (32, 48), "cpu", variants=("eager",),
                                  batch_sizes=(1,), repeats=1, progress=False), out / "benchmark.md")
    # 8 s an epoch and 40 s to spend after the 5 s reserve: 2 epochs each of the 200 (the clock
    # is frozen, so the first run leaves the time it was given but did not use to the second)
    summary = reproduce_all(None, out, 45, dataset="synthetic", device="cpu", models=["segnet_basic", "fcn_basic"],
                            overrides=TINY, benchmark=True, progress=True, clock=Clock(),
                            measure=fixed_costs(epoch_seconds=8.0))
    assert summary["started"] == "1970-01-01 00:16:40"  # the clock's first reading (1000 s), before measuring
    printed = capsys.readouterr().out
    assert "plan for" in printed and "budget-limited" in printed  # the plan is printed before training
    assert [run["name"] for run in summary["runs"]] == ["segnet_basic", "fcn_basic"]
    bundle = out / "bundle"
    files = sorted(p.name for p in bundle.iterdir())
    assert set(files) <= set(BUNDLE_FILES) and len(files) <= 8
    assert {"table.md", "table.json", "runs.json", "curves.png", "segnet_basic.pt", "benchmark.json"} <= set(files)
    assert all(p.stat().st_size < 16 * 2**20 and p.is_file() for p in bundle.iterdir())  # flat, small
    table = json.loads((bundle / "table.json").read_text())
    done = [row for row in table["rows"] if "ours" in row]
    assert [row["name"] for row in done] == ["segnet_basic", "fcn_basic"]
    assert [row["epochs"] for row in done] == [2, 4] and all(row["budget_limited"] for row in done), done
    assert all(row["epochs"] == row["planned_epochs"] for row in done)
    text = (bundle / "table.md").read_text()
    assert "budget-limited: " in text and "of 200 epochs" in text and "82.7 / " in text
    runs = json.loads((bundle / "runs.json").read_text())["runs"]
    assert runs["segnet_basic"]["config"]["epochs"] == done[0]["planned_epochs"]
    assert runs["segnet_basic"]["history"] and "iou" in runs["segnet_basic"]["test_metrics"]["classes"][0]
    from segnet.engine.inference import load_model

    assert load_model(bundle / "segnet_basic.pt").name == "segnet_basic"  # the slim checkpoint loads
    # the docs: sections labelled with the device; importing again replaces, never duplicates
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text("# Results\n\nearlier text\n")
    written = import_bundle(bundle, docs)
    import_bundle(bundle, docs)
    results = (docs / "results.md").read_text()
    assert results.startswith("# Results\n\nearlier text") and results.count(f"<!-- bundle {written['key']} -->") == 1
    assert table["device"] in results and "budget-limited" in results and "-curves.png)" in results
    performance = (docs / "performance.md").read_text()
    assert performance.startswith("## Budgeted reproductions") and performance.count("<!-- /bundle") == 1
    assert "| segnet_basic |" in performance and "batch-1 ms" in performance
    assert written["targets"] == []  # the GPU targets are SegNet's, which this bundle did not benchmark


@pytest.mark.slow
def test_a_kill_at_any_moment_keeps_every_finished_run_and_a_rerun_completes(tmp_path):
    out = tmp_path / "all"
    # a 2-epoch protocol and an hour to spend, planned with fixed_costs (measuring is tested
    # elsewhere and took half this test's time): the plan is the protocol whatever this
    # machine's speed, and the run is killed by what it has written, not after some seconds
    # (and SUBPROCESS_SCENES: 48 training images still leave fcn_basic's second epoch many times
    # the 50 ms the kill below waits between looks)
    command = [sys.executable, "-c", "import sys; from segnet.engine.recipes import RECIPES; "
               "RECIPES['paper-basic']['epochs'] = 2; from segnet.data import synthetic; "
               f"synthetic.DEFAULT_SIZES.update({SUBPROCESS_SCENES!r}); "
               f"sys.path.insert(0, {str(Path(__file__).parent)!r}); from test_budget import fixed_costs; "
               "import segnet.reproduce.budget as budget; budget.measure_runs = fixed_costs(); "
               "from segnet.cli import main; sys.exit(main(sys.argv[1:]))",
               "reproduce", "all", "--dataset", "synthetic", "--root", str(tmp_path), "--out", str(out),
               "--budget", "1h", "--models", "segnet_basic", "fcn_basic", "--size", "32x48", "--device", "cpu",
               "--no-benchmark", "--set", "bn_recompute=false"]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    give_up = time.monotonic() + 900  # a guard against a hang, not a speed check (this takes seconds)
    try:  # kill it once the first run is written and the second has begun
        while not (out / "runs" / "fcn_basic" / "metrics.csv").exists():
            assert process.poll() is None, "the process ended before the second run started"
            assert time.monotonic() < give_up, "hung: no second run after 15 minutes"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
    table = json.loads((out / "bundle" / "table.json").read_text())
    rows = {row["name"]: row for row in table["rows"]}
    assert "ours" in rows["segnet_basic"] and (out / "bundle" / "segnet_basic.pt").is_file()
    assert rows["fcn_basic"]["unfinished"] == "did not finish"
    assert "fcn_basic (paper-basic): did not finish" in (out / "bundle" / "table.md").read_text()
    finished_at = (out / "runs" / "segnet_basic" / "result.json").stat().st_mtime_ns
    # the same command again: the finished run is kept, the killed one is resumed and finished
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "kept from an earlier try: segnet_basic" in result.stdout
    assert (out / "runs" / "segnet_basic" / "result.json").stat().st_mtime_ns == finished_at
    rows = {row["name"]: row for row in json.loads((out / "bundle" / "table.json").read_text())["rows"]}
    assert "ours" in rows["fcn_basic"] and "resuming" in (out / "runs" / "fcn_basic" / "train.log").read_text()


@pytest.mark.slow
def test_side_by_side_measures_processes_sharing_the_device():
    speedup = measure_side_by_side("fcn_basic", 6, 4, (32, 48), __import__("torch").device("cpu"), processes=2,
                                   seconds=0.5)
    assert math.isfinite(speedup) and speedup > 0  # both workers trained and reported in the shared window


@pytest.mark.slow
def test_small_models_train_side_by_side_in_their_own_processes(tmp_path, monkeypatch):
    from segnet.engine.recipes import RECIPES

    monkeypatch.setitem(RECIPES["paper-basic"], "epochs", 2)  # a 2-epoch protocol, and time for all of it
    out = tmp_path / "all"
    summary = reproduce_all(None, out, 600, dataset="synthetic", device="cpu", side_by_side=2,
                            models=["fcn_basic", "fcn_basic_no_addition"], overrides=TINY, benchmark=False,
                            progress=False, clock=Clock(), measure=fixed_costs(),
                            measure_together=lambda *args, **kwargs: 1.6)
    assert summary["side_by_side"] == {"processes": 2, "speedup": 1.6}
    assert all(run["side_by_side"] for run in summary["runs"])
    rows = json.loads((out / "bundle" / "table.json").read_text())["rows"]
    assert [row["epochs"] for row in rows] == [2, 2] and not any(row["budget_limited"] for row in rows), rows


@pytest.mark.slow
def test_a_run_that_overruns_stops_in_time_for_the_next_one(tmp_path, monkeypatch, few_scenes):
    from segnet.engine.recipes import RECIPES

    # planned at 1 s an epoch, but every clock reading finds 10 s gone: the first run is stopped
    # after its first epoch (validated, tested, labelled) and the second still runs
    monkeypatch.setitem(RECIPES["paper-basic"], "epochs", 3)
    out = tmp_path / "all"
    reproduce_all(None, out, 100, dataset="synthetic", device="cpu", models=["segnet_basic", "fcn_basic"],
                  overrides=TINY, benchmark=False, progress=False, clock=Clock(step=10.0), measure=fixed_costs())
    rows = {row["name"]: row for row in json.loads((out / "bundle" / "table.json").read_text())["rows"]}
    assert rows["segnet_basic"]["planned_epochs"] == 3 and rows["segnet_basic"]["epochs"] == 1
    assert rows["segnet_basic"]["budget_limited"] and "ours" in rows["segnet_basic"]
    assert len((out / "runs" / "segnet_basic" / "metrics.csv").read_text().splitlines()) == 2  # header, epoch 1
    assert "ours" in rows["fcn_basic"] and rows["fcn_basic"]["epochs"] >= 1


def _abort() -> None:
    os.abort()  # what glibc does on a corrupted heap, as oneDNN's bf16 kernels did on AMX


def _out_of_memory() -> None:
    raise MemoryError("no room for the batch")


@pytest.mark.slow
def test_a_measurement_that_crashes_its_process_is_reported_not_fatal():
    with pytest.raises(RuntimeError, match=r"the process died: signal 6 \(SIGABRT\)"):
        in_child(_abort)
    with pytest.raises(RuntimeError, match="MemoryError: no room for the batch"):
        in_child(_out_of_memory)


@pytest.mark.slow  # a budgeted reproduction end to end
def test_a_model_that_cannot_be_measured_costs_its_row_only(tmp_path, monkeypatch, capsys, few_scenes):
    from segnet.engine.recipes import RECIPES

    monkeypatch.setitem(RECIPES["paper-basic"], "epochs", 2)
    costs = fixed_costs()

    def measure(runs, *args):
        measured = costs(runs, *args)
        runs[1].failed = "measuring fcn_basic failed: the process died: signal 6 (SIGABRT)"
        return measured
    out = tmp_path / "all"
    reproduce_all(None, out, 600, dataset="synthetic", device="cpu", models=["segnet_basic", "fcn_basic"],
                  overrides=TINY, benchmark=False, progress=True, clock=Clock(), measure=measure)
    assert "fcn_basic" in capsys.readouterr().out.split("not run: measuring fcn_basic failed")[0]  # in the plan
    rows = {row["name"]: row for row in json.loads((out / "bundle" / "table.json").read_text())["rows"]}
    assert "ours" in rows["segnet_basic"] and rows["segnet_basic"]["epochs"] == 2
    assert "SIGABRT" in rows["fcn_basic"]["failed"] and "ours" not in rows["fcn_basic"]
    assert not (out / "runs" / "fcn_basic" / "last.pt").exists()  # never trained
    assert "SIGABRT" in (out / "bundle" / "table.md").read_text()


def test_gpu_targets_read_the_segnet_row():
    benchmark = {"size": [360, 480], "rows": [{"model": "segnet", "variants": {
        "bf16": {"latency_ms": 2.5, "throughput_by_batch": {"1": 400.0, "64": 1600.0}, "peak_memory_mb": 350.0},
        "eager": {"latency_ms": 6.0, "throughput_by_batch": {"1": 160.0, "64": 700.0}, "peak_memory_mb": 280.0}}}]}
    targets = gpu_targets(benchmark)
    assert [t["met"] for t in targets] == [True, True, True]
    assert [t["value"] for t in targets] == [1600.0, 2.5, 280.0]
    assert gpu_targets({"rows": []}) == []


def test_cli_reproduce_all_and_import_refuse_what_is_missing(tmp_path, capsys):
    assert main(["reproduce", "all", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--budget" in capsys.readouterr().err
    assert main(["reproduce", "all", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--budget", "5m",
                 "--epochs", "3"]) == 2
    assert "drop --epochs" in capsys.readouterr().err
    assert main(["reproduce", "import"]) == 2
    assert "bundle folder" in capsys.readouterr().err
    assert main(["reproduce", "import", str(tmp_path)]) == 3
    assert "no table.json" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_table3_trains_and_tests_a_rival_with_the_paper_recipe(tmp_path, few_scenes):
    from segnet.reproduce.paper import reproduce

    overrides = {"epochs": 1, "size": [32, 48], "batch_size": 8, "encoder_weights": None, "bn_recompute": False,
                 "device": "cpu"}
    rows = reproduce("table3", None, tmp_path, models=["deeplab_largefov"], overrides=overrides,
                     dataset="synthetic", progress=False)
    assert rows[0]["model"] == "deeplab_largefov" and rows[0]["paper"] == [88.20, 62.53, 53.88, 32.77]
    assert rows[0]["recipe"] == "paper" and all(0 <= value <= 1 for value in rows[0]["ours"])
    assert "Table 3's longest column" in (tmp_path / "table.md").read_text()


def test_missing_vgg_weights_stop_the_budgeted_run_before_anything_is_measured(tmp_path, capsys):
    code = main(["reproduce", "all", "--dataset", "synthetic", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--budget", "5m", "--models", "segnet_basic", "fcn8s", "--encoder-weights", str(tmp_path / "no.pth")])
    err = capsys.readouterr().err
    assert code == 3 and "no.pth does not exist" in err
    assert not (tmp_path / "o" / "plan.json").exists()  # nothing measured, nothing planned
