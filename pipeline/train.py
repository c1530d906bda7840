"""Stage `train`: train the GAN in params.yaml's `train` section and track it in MLflow.

Run: python pipeline/train.py --data data/prepared --out outputs/train \
         --checkpoints checkpoints/train --metrics metrics/train.json --plots plots/train \
         [--classifier outputs/classifier/classifier.keras]   (scores G at every sample interval)
"""

import argparse
import shutil
import signal
import time
from pathlib import Path

from ganlab.core.cli import run_stage
from ganlab.core.config import flatten, load_params
from ganlab.core.files import write_json
from ganlab.data import data_info, load_split
from ganlab.nets.specs import RESOLVED
from ganlab.report.plots import history_figures, save_figure
from ganlab.tracking import store as tracking
from ganlab.training import backend


def _sigterm(signum, frame):
    # `dvc repro` and schedulers stop us with SIGTERM: treat it as Ctrl-C so a checkpoint is saved.
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoints", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--plots", type=Path, required=True)
    ap.add_argument("--classifier", type=Path, help="the classifier stage's model: G's quality over training")
    args = ap.parse_args()
    params = load_params(args.params)
    cfg = params.train
    backend.use(backend.choose(cfg))
    # Imported only now: these import Keras, which reads KERAS_BACKEND once.
    from ganlab.nets.models import portable
    from ganlab.nets.saving import save_model
    from ganlab.tracking.runlog import TrainTracking
    from ganlab.training.train import resolved, train, weights_digest
    from ganlab.training.watch import quality_watch

    data_hash = data_info(args.data)["data_hash"]
    images, labels = load_split(args.data, "train")
    signal.signal(signal.SIGTERM, _sigterm)

    logged = {k: str(v) for k, v in flatten(params).items() if k.split(".")[0] in ("prepare", "train")}
    # Both the raw values (null = the model's reference) and what they resolved to.
    cfg = resolved(cfg)
    logged.update({f"train.resolved.{k}": str(getattr(cfg, k)) for k in RESOLVED})
    dvc_exp = tracking.dvc_experiment()
    tags = {**tracking.git_info(), **dvc_exp, "data_hash": data_hash, "model": cfg.model,
            "backend": cfg.backend}
    # Names that tell runs apart in a list, led by the DVC experiment's name when there is one; the
    # start time tells a re-run from the first.
    name = f"{cfg.model}-{cfg.iterations}it-{cfg.d_schedule}-seed{cfg.seed}"
    name += ("-jax" if cfg.backend == "jax" else "") + time.strftime(" %m-%d %H:%M")
    if "dvc_experiment" in dvc_exp:
        name = f"{dvc_exp['dvc_experiment']} ({name})"
    mlrun = TrainTracking(cfg.experiment, name, logged, tags, args.out / "mlflow_run.json")
    # First, so that the scores it adds to each interval's row reach MLflow too.
    watch = quality_watch(args.classifier, args.data, cfg, args.checkpoints)  # () without a classifier
    try:
        result = train(cfg, images, data_hash, args.out / "samples", args.checkpoints,
                       callbacks=(*watch, mlrun), labels=labels)
    except BaseException as exc:
        mlrun.stopped(exc)
        raise
    last = result.metrics["iterations"]
    if watch:
        result.metrics.update(watch[0].summary(last))
        result.metrics["kept_iteration"] = watch[0].restore_best() if cfg.keep == "best" else last

    if not result.chief:
        # Another worker of a multi-worker run: the chief writes the outputs and the MLflow run.
        print(f"train: worker finished {result.metrics['iterations']} iterations, "
              f"weights digest {weights_digest(result.gan)}")
        return
    # G as stock Keras layers (the same weights and outputs): the saved file loads without ganlab.
    gens = {"generator": result.gan.generator, "generator_ema": result.gan.generator_ema}
    nets = {name: portable(cfg.model, g, cfg.z_dim, cfg.width) for name, g in gens.items() if g is not None}
    nets["discriminator"] = result.gan.discriminator
    models = {name: (model, args.out / f"{name}.keras") for name, model in nets.items()}
    for model, path in models.values():
        save_model(model, path)
    args.plots.mkdir(parents=True, exist_ok=True)
    result.history.to_csv(args.plots / "history.csv", index=False)
    figures = [save_figure(fig, args.out / f"{name}.png") for name, fig in history_figures(result.history).items()]
    device = result.state["device"]
    digest = weights_digest(result.gan)
    # The run id lets `dvc exp show` lead to the MLflow run of each experiment.
    metrics = {**result.metrics, "model": cfg.model, "backend": device["backend"], "precision": device["precision"],
               "onednn": device["onednn"],
               "mlflow_run_id": mlrun.run.run_id if mlrun.run else None, "weights_digest": digest,
               **{f"device_{k}": v for k, v in device.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    write_json(args.metrics, metrics)
    run_id = mlrun.finish(metrics, figures, models if cfg.log_models else {})
    # The outputs now hold the finished run. A checkpoint left behind would make the next re-run
    # (after a code change, say) "resume" at the last iteration and train nothing.
    shutil.rmtree(args.checkpoints, ignore_errors=True)
    best = (f", best FD {metrics['best_frechet_distance']:.2f} at iteration {metrics['best_iteration']} "
            f"(kept: {metrics['kept_iteration']})" if "best_iteration" in metrics else "")
    print(f"train: {metrics['iterations']} iterations, {metrics['iterations_per_s']} it/s{best}, MLflow run {run_id}, "
          f"weights digest {digest}")


if __name__ == "__main__":
    run_stage("train", main)
