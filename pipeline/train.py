"""Stage `train`: train the GAN in params.yaml's `train` section and track it in MLflow.

Run: python pipeline/train.py --data data/prepared --manifest metrics/prepare.json --out outputs/train \
         --checkpoints checkpoints/train --metrics metrics/train.json --plots plots/train
"""

import argparse
import signal
from pathlib import Path

import mlflow
import mlflow.keras
import numpy as np
from mlflow.models import infer_signature

from ganlab import tracking
from ganlab.cli import run_stage
from ganlab.config import flatten, load_params
from ganlab.data import load_split
from ganlab.files import read_json, write_json
from ganlab.plots import history_figures, save_figure
from ganlab.runlog import RunLog, write_run_info
from ganlab.train import resolve, save_model, train


def _sigterm(signum, frame):
    # `dvc repro` and schedulers stop us with SIGTERM: treat it as Ctrl-C so a checkpoint is saved.
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoints", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--plots", type=Path, required=True)
    args = ap.parse_args()
    params = load_params(args.params)
    cfg = params.train
    manifest = read_json(args.manifest, "the prepare manifest")
    images, _ = load_split(args.data, "train", manifest)
    signal.signal(signal.SIGTERM, _sigterm)

    run: RunLog | None = None

    def on_start(state: dict) -> dict:
        nonlocal run
        tags = {**tracking.git_info(), "data_hash": manifest["data_hash"], "data_source": manifest["source"],
                "model": cfg.model, **{k: str(v) for k, v in state["device"].items()}}
        logged = {k: str(v) for k, v in flatten(params).items() if k.split(".")[0] in ("prepare", "train")}
        logged.update({f"train.resolved.{k}": str(v) for k, v in vars(resolve(cfg)).items()})
        # MLflow params are immutable: a checkpoint extended with other params gets a run of its own.
        same = state.get("logged_params") == logged
        run = RunLog.start(cfg.experiment, state.get("mlflow_run_id") if same else None,
                           f"{cfg.model}-{cfg.seed}", tags)
        if not same:
            run.call("params", mlflow.log_params, logged)
        if state.get("resumed_at"):
            run.call("tags", mlflow.set_tags, {"resumed": "true",
                                               "resumed_at": ",".join(map(str, state["resumed_at"]))})
        write_run_info(args.out / "mlflow_run.json", run.run_id)
        return {**state, "mlflow_run_id": run.run_id, "logged_params": logged}

    def on_interval(row: dict, grid: Path) -> None:
        it = row["iteration"]
        run.call("interval metrics", tracking.log_metrics, {k: v for k, v in row.items() if k != "iteration"}, it)
        run.call("sample grids", mlflow.log_artifact, str(grid), "samples")

    try:
        result = train(cfg, images, manifest["data_hash"], args.out / "samples", args.checkpoints,
                       on_start=on_start, on_interval=on_interval)
    except BaseException as exc:
        # Never leave the MLflow run "running": an interrupted run is KILLED, anything else FAILED.
        if run:
            run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise

    save_model(result.gan.generator, args.out / "generator.keras")
    save_model(result.gan.discriminator, args.out / "discriminator.keras")
    args.plots.mkdir(parents=True, exist_ok=True)
    result.history.to_csv(args.plots / "history.csv", index=False)
    figures = history_figures(result.history)
    for name, fig in figures.items():
        save_figure(fig, args.out / f"{name}.png")
        run.call("figures", mlflow.log_figure, fig, f"plots/{name}.png")
    metrics = {**result.metrics, **{f"device_{k}": v for k, v in result.state["device"].items()
                                    if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    write_json(args.metrics, metrics)
    run.call("summary metrics", tracking.log_metrics, metrics, None, "train_")
    if cfg.log_models:
        z = np.random.default_rng(0).standard_normal((4, cfg.z_dim)).astype(np.float32)
        fake = result.gan.generate(z).numpy()
        uris = {}
        for name, model, x, y in (("generator", result.gan.generator, z, fake),
                                  ("discriminator", result.gan.discriminator, fake,
                                   result.gan.discriminator(fake).numpy())):
            logged = run.call(f"{name} model", mlflow.keras.log_model, model, name=name,
                              signature=infer_signature(x, y))
            if logged:
                uris[f"{name}_uri"] = logged.model_uri
        # Later stages (registry, sampling) find the logged models through these URIs.
        write_run_info(args.out / "mlflow_run.json", run.run_id, **uris)
    run.end("FINISHED")
    run.report_failures(args.out / "not_logged.json")
    print(f"train: {metrics['iterations']} iterations, {metrics['iterations_per_s']} it/s, "
          f"MLflow run {run.run_id}")


if __name__ == "__main__":
    run_stage("train", main)
