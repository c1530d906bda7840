"""`make bench`'s table against the CPU's peak (bench/peak.py), read back from the committed bench/results.json,
and how a step's row is timed (bench/steps.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str, path: Path):
    # bench/ is a folder of scripts, not a package: load a module by path, as bench.py finds peak.py beside itself.
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def peak():
    return load("bench_peak", ROOT / "bench" / "peak.py")


@pytest.mark.parametrize("most, iterations, runs, want", [
    (2, 10, [2, 10], 8 / 6),    # 5 calls of 2: 8 iterations in the 6 s from the end of the first to the last
    (20, 10, [10, 30], 20 / 4),  # one call of 10 is lengthened to 3 of the same length: 20 in 4 s
    (30, 10, [10, 40], 30 / 5),  # 3 calls of 10 would make one of 30: 4 calls, 30 in 5 s
])
def test_a_row_is_the_steady_pace_of_its_calls(monkeypatch, most, iterations, runs, want):
    steps = load("bench_steps", ROOT / "bench" / "steps.py")
    clock = [0.0]
    durations = iter([9.0, 5.0, 1.0, 3.0, 1.0, 1.0])  # the warm-up call; the first timed one, with fit()'s set-up
    seen = []

    def run(epochs, n, callbacks):
        seen.append(n)
        for cb in callbacks:
            cb.on_train_begin()
        for call in range(n // math.gcd(most, n)):
            clock[0] += next(durations)
            for cb in callbacks:
                cb.on_train_batch_end(call)

    gan = types.SimpleNamespace(set_data=lambda x: None, most_steps_per_execution=most, run=run,
                                steps_per_call=lambda n: math.gcd(most, n))  # as GAN.steps_per_call
    monkeypatch.setattr(steps, "make_gan", lambda cfg, strategy, fused: gan)
    monkeypatch.setattr(steps, "select_device", lambda cfg: (None, {}))
    monkeypatch.setattr(steps, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    assert steps.compiled_its(None, steps.TrainConfig(model="mlp"), iterations) == pytest.approx(want)
    assert seen == runs  # a warm-up call of the timed calls' length, then the timed run


def test_the_committed_rows_follow_from_the_timings_and_the_layers_as_they_are(peak):
    # A timing key that peak.py no longer reads drops its row; a layer changed since the last `make bench`
    # changes the work per iteration, and so every fraction the docs quote: either way the table no
    # longer matches the committed one.
    results = json.loads((ROOT / "bench" / "results.json").read_text())
    stored = results["peak"]
    table = peak.peak_table(results, {k: v for k, v in stored.items() if k != "rows"})
    assert [(r["what"], r["model"], r["backend"], r["precision"]) for r in table] == \
        [(r["what"], r["model"], r["backend"], r["precision"]) for r in stored["rows"]]
    for got, want in zip(table, stored["rows"]):
        assert got["gflop_per_iteration"] == pytest.approx(want["gflop_per_iteration"], abs=1e-3), got
        assert got["fraction_of_peak"] == pytest.approx(want["fraction_of_peak"], abs=1e-3), got
        assert got["fraction_of_peak"] == pytest.approx(got["gflops"] / got["peak_gflops"], abs=1e-3)
    held = [r for r in table if r["what"] == "capped at AVX2"]
    assert held and {r["peak_gflops"] for r in held} == {stored["avx2"]["peak_gflops"]}


def test_a_cpu_without_a_clock_gets_no_fraction_but_keeps_its_rows(peak):
    results = {"machine": {"onednn": "on"}, "compiled_its": 100.0}
    (row,) = peak.peak_table(results, {"peak_gflops": None})
    assert row["fraction_of_peak"] is None and row["gflops"] == pytest.approx(100 * row["gflop_per_iteration"], 0.01)


def test_a_gpus_rows_are_set_against_the_matmul_of_their_own_precision(peak, monkeypatch):
    monkeypatch.setattr(peak, "matmul_gflops", lambda n, repeats, dtype: {"float32": 4e4, "bfloat16": 4e5}[dtype])
    rows = {"mlp_its": 5000.0, "dcgan_float32_its": 100.0, "dcgan_bfloat16_spe20_its": 300.0, "device": "gpu:0"}
    out = peak.device_peak(rows)
    assert out["matmul_8192_gflops"] == {"float32": 4e4, "bfloat16": 4e5}
    got = {r["row"]: r for r in out["rows"]}
    assert set(got) == {"mlp_its", "dcgan_float32_its", "dcgan_bfloat16_spe20_its"}
    dcgan = peak.gflop("dcgan")
    assert got["dcgan_float32_its"]["fraction_of_matmul"] == pytest.approx(dcgan * 100 / 4e4, abs=1e-4)
    assert got["dcgan_bfloat16_spe20_its"]["fraction_of_matmul"] == pytest.approx(dcgan * 300 / 4e5, abs=1e-4)
