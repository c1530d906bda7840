"""The report's run identity and sections, from fake stage outputs (no MLflow, no training)."""

import numpy as np
import pandas as pd

from ganlab.core.config import TrainConfig
from ganlab.report import content as report
from ganlab.report.plots import save_grid

PREP = {"source": "package", "data_hash": "abc", "counts": {"train": 60000, "test": 10000}}
TRAIN = {"iterations": 900, "iterations_per_s": 0.31, "precision": "float32", "resumed": False}
TAGS = {"git_commit": "0123456789abcdef", "git_dirty": "false", "device": "cpu", "cpu": "AMD EPYC", "cpu_bf16": "none",
        "strategy": "OneDeviceStrategy", "dvc_experiment": "dcgan-blog", "dvc_baseline_rev": "f" * 40}
QUALITY = {"frechet_distance": 10.0, "classifier_score": 9.0, "modes_covered": 10, "kl_to_uniform": 0.01,
           "precision": 0.7, "recall": 0.5}
EVAL = {"confusion": {"tp": 9, "fn": 1, "tn": 8, "fp": 2, "accuracy": 0.85, "precision": 0.8, "recall": 0.9,
                      "f1": 0.85, "mean_d_real": 0.8, "mean_d_fake": 0.2},
        "quality": QUALITY, "reference": QUALITY, "noise": QUALITY}


def test_identity_names_model_length_precision_and_experiment():
    lines = report.identity(TrainConfig(model="dcgan"), PREP, TRAIN, TAGS, "run1", "http://x")
    text = "\n".join(lines)
    assert "model `dcgan`, 900 iterations" in text and "precision float32" in text
    assert "native bf16: none" in text and "DVC experiment `dcgan-blog` on baseline `ffffffffffff`" in text
    assert "resumed" not in text
    resumed = report.identity(TrainConfig(), PREP, {**TRAIN, "resumed": True}, {"resumed_at": "300"}, "r", "l")
    assert resumed[-1] == "resumed from a checkpoint at iteration 300"


def test_sections_hold_every_picture_and_table(tmp_path):
    train, evaluate = tmp_path / "train", tmp_path / "evaluate"
    grids = np.zeros((4, 28, 28, 1), np.float32)
    for it in (300, 600):
        save_grid(grids, 2, train / "samples" / f"iter_{it:06d}.png")
    runs = pd.DataFrame({"run_id": ["run1"], "start_time": [pd.Timestamp("2026-11-23")],
                         "metrics.eval_quality.frechet_distance": [10.0],
                         "params.train.model": ["dcgan"], "tags.precision": ["float32"]})
    parts = report.sections(["line"], train, evaluate, tmp_path, EVAL, {"test_accuracy": 0.99}, 1000, runs, "run1")
    titles = [s.title for s in parts]
    assert titles[0] == "Run" and "Samples over training" in titles and titles[-1] == "Runs in this experiment"
    images = [b[1].name for s in parts for b in s.blocks if b[0] == "img"]
    assert {"progression.png", "grid_10x10.png", "confusion.png", "loss.png"} <= set(images)
    assert (tmp_path / "progression.png").exists()
    table = parts[-1].blocks[0][1]
    assert "dtype policy" in table.columns and table.iloc[0]["model"] == "dcgan"


def test_metric_rows_add_the_ema_column_only_when_there_is_one():
    plain = report.metric_rows(QUALITY, QUALITY, QUALITY)
    assert list(plain.columns) == ["metric", "real data", "this generator", "noise", "better"]
    with_ema = report.metric_rows(QUALITY, QUALITY, QUALITY, {**QUALITY, "frechet_distance": 7.5})
    assert list(with_ema.columns) == ["metric", "real data", "this generator", "its EMA", "noise", "better"]
    assert with_ema.set_index("metric").loc["frechet_distance", "its EMA"] == 7.5


def test_a_conditional_run_gets_a_section_on_the_digit_asked_for(tmp_path):
    agree = {"overall": 0.9, "per_digit": {str(d): 0.9 for d in range(10)}}
    parts = report.sections(["line"], tmp_path, tmp_path, tmp_path, {**EVAL, "label_agreement": agree},
                            {"test_accuracy": 0.99}, 1000, None, "run1")
    section = next(s for s in parts if s.title == "The digit asked for")
    assert "90.00%" in section.blocks[0][1] and len(section.blocks[1][1]) == 10
    assert section.blocks[2][1].name == "digits.png"
    assert "The digit asked for" not in [s.title for s in report.sections(
        ["line"], tmp_path, tmp_path, tmp_path, EVAL, {"test_accuracy": 0.99}, 1000, None, "run1")]


def test_a_run_with_a_code_gets_a_section_on_what_each_value_draws(tmp_path):
    values = [str(v) for v in range(12)]
    code = {"purity": 0.8, "distinct_digits": 10, "digit": {v: int(v) % 10 for v in sorted(values)},
            "share": {v: 0.5 + int(v) / 100 for v in sorted(values)}, "unsure": dict.fromkeys(values, 0.1)}
    ema = {**code, "purity": 0.75, "distinct_digits": 9, "share": {v: int(v) / 100 for v in sorted(values)}}
    parts = report.sections(["line"], tmp_path, tmp_path, tmp_path, {**EVAL, "code": code, "code_ema": ema},
                            {"test_accuracy": 0.99}, 1000, None, "run1")
    section = next(s for s in parts if s.title == "The latent's code")
    text = section.blocks[0][1]
    assert "80.00%" in text and "10 distinct digits over 12 values" in text and "(75.00% and 9 for its EMA)" in text
    table = section.blocks[1][1]
    assert table["value"].tolist() == values  # in the values' order, not the metrics file's (0, 1, 10, 11, 2)
    assert table["share read as it"].tolist() == [0.5 + v / 100 for v in range(12)]
    assert table["its EMA: share"].tolist() == [v / 100 for v in range(12)]
    assert section.blocks[2][1].name == "codes.png"
    assert "The latent's code" not in [s.title for s in report.sections(
        ["line"], tmp_path, tmp_path, tmp_path, EVAL, {"test_accuracy": 0.99}, 1000, None, "run1")]


def test_runs_are_named_by_experiment_and_show_what_differs():
    import pandas as pd

    from ganlab.report.content import runs_table

    runs = pd.DataFrame({
        "run_id": ["a" * 32, "b" * 32, "c" * 32], "start_time": pd.to_datetime(["2026-12-01"] * 3),
        "tags.mlflow.runName": ["mlp-1", "mlp-2", "mlp-3"], "tags.dvc_experiment": ["seed-1", None, "seed-3"],
        "params.train.model": ["mlp"] * 3, "params.train.seed": ["1", "42", "3"], "params.train.z_dim": ["100"] * 3,
        "metrics.eval_quality.frechet_distance": [3.0, 2.0, 4.0]})
    table = runs_table(runs, current="c" * 32)
    assert list(table["name"]) == ["seed-1", "mlp-2", "seed-3"]
    assert "seed" in table.columns and "z_dim" not in table.columns  # only the params that differ
    assert list(table[""]) == ["", "★ best", "← this run"]
