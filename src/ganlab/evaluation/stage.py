"""The evaluate stage's work: judge the trained G and D, write the figures and pictures, log them to the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ganlab.core.config import Params, flatten
from ganlab.core.files import write_json
from ganlab.data.arrays import load_split
from ganlab.evaluation import judge as ev
from ganlab.nets.models import weights_digest
from ganlab.nets.saving import load_model
from ganlab.tracking.runlog import RunLog


@dataclass(frozen=True)
class EvaluatePaths:
    data: Path
    train: Path  # train's output folder
    classifier: Path
    out: Path
    metrics: Path
    plots: Path


def evaluate_stage(params: Params, paths: EvaluatePaths) -> str:
    """D's confusion matrix, the quality numbers (of G's EMA too) and the pictures, into the files DVC
    tracks and the train stage's MLflow run; return the stage's one-line summary."""
    cfg, z_dim = params.evaluate, params.train.z_dim
    generator = load_model(paths.train / "generator.keras")
    discriminator = load_model(paths.train / "discriminator.keras")
    classifier = load_model(paths.classifier)
    x_train, _ = load_split(paths.data, "train")
    x_test, y_test = load_split(paths.data, "test")
    # train.ema: the averaged G, scored on the same z in the same pass.
    ema_file = paths.train / "generator_ema.keras"
    ema = load_model(ema_file) if ema_file.exists() else None
    metrics, d_real, d_fake = ev.judge(generator, discriminator, classifier, x_train, x_test, cfg, z_dim, ema, y_test)
    # How these figures were measured: only figures measured alike are compared (the registry's champion).
    # The classifier by its weights: a re-trained file differs in its bytes, not in what it computes.
    metrics["measured_by"] = {"classifier": weights_digest(classifier), "n_samples": cfg.n_samples,
                              "seed": cfg.seed}
    write_json(paths.metrics, metrics)
    files = ev.pictures(generator, x_train, metrics["confusion"], cfg, z_dim, paths.out)
    paths.plots.mkdir(parents=True, exist_ok=True)
    ev.confusion_rows(d_real, d_fake).to_csv(paths.plots / "confusion.csv", index=False)

    run = RunLog.from_file(paths.train / "mlflow_run.json")
    run.log_metrics(flatten(metrics), None, "eval_")
    for path in files:
        run.log_artifact(path, "evaluate")
    run.save_pending("evaluate")
    q, r, cm = metrics["quality"], metrics["reference"], metrics["confusion"]
    return (f"evaluate: D accuracy {cm['accuracy']:.3f}, "
            f"FD {q['frechet_distance']:.2f} (real {r['frechet_distance']:.2f}), "
            f"modes {q['modes_covered']}/10, precision {q['precision']:.3f}, recall {q['recall']:.3f}, "
            f"coverage {q['coverage']:.3f}"
            + (f", label agreement {metrics['label_agreement']['overall']:.3f}" if "label_agreement" in metrics
               else "")
            + (f", code purity {metrics['code']['purity']:.3f} ({metrics['code']['distinct_digits']} digits over "
               f"{len(metrics['code']['digit'])} values)" if "code" in metrics else ""))
