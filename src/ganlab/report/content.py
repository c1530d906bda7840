"""The run report: one Markdown file and one self-contained HTML file built from the same sections."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ganlab.core.files import atomic_path
from ganlab.report.plots import plt, save_figure

# Columns of the runs table: MLflow key -> short heading. The first metric decides "best".
RUN_COLUMNS = {
    "metrics.eval_quality.frechet_distance": "FD (lower is better)",
    "metrics.eval_quality.classifier_score": "classifier score",
    "metrics.eval_quality.modes_covered": "modes",
    "metrics.eval_quality.precision": "precision",
    "metrics.eval_quality.recall": "recall",
    "metrics.eval_quality.coverage": "coverage",
    "metrics.eval_confusion.accuracy": "D accuracy",
    "metrics.train_iterations_per_s": "it/s",
    "params.train.model": "model",
    "params.train.resolved.iterations": "iterations",
    "params.train.d_schedule": "D schedule",
    "tags.precision": "dtype policy",  # not "precision": that heading is the quality metric
}
BEST_BY = "metrics.eval_quality.frechet_distance"


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # ("p", text) | ("table", DataFrame) | ("img", path, caption)


def run_names(runs: pd.DataFrame) -> pd.Series:
    """What tells runs apart: the DVC experiment's name, else the MLflow run name."""
    name = runs.get("tags.mlflow.runName", pd.Series("", index=runs.index)).fillna("")
    if "tags.dvc_experiment" in runs.columns:
        name = runs["tags.dvc_experiment"].where(runs["tags.dvc_experiment"].notna(), name)
    return name


def differing_params(runs: pd.DataFrame) -> list[str]:
    """The `params.train.*` columns whose values differ between the runs (what the runs changed)."""
    cols = [c for c in runs.columns if c.startswith("params.train.") and c not in RUN_COLUMNS
            and ".resolved." not in c and c.replace("train.", "train.resolved.") not in RUN_COLUMNS]
    return [c for c in cols if runs[c].fillna("").nunique() > 1]


def runs_table(runs: pd.DataFrame, current: str | None = None) -> pd.DataFrame:
    """Runs with their name, key params and metrics, and the params that differ between them; best FD
    marked with ★ and the `current` run with ←."""
    if runs.empty:
        return pd.DataFrame()
    cols = [c for c in RUN_COLUMNS if c in runs.columns] + differing_params(runs)
    table = runs[["run_id", "start_time", *cols]].copy()
    table.insert(1, "name", run_names(runs))
    table["run_id"] = table["run_id"].str[:8]
    table["start_time"] = pd.to_datetime(table["start_time"]).dt.strftime("%Y-%m-%d %H:%M")
    mark = pd.Series("", index=runs.index)
    if BEST_BY in runs.columns and runs[BEST_BY].notna().any():
        mark[runs[BEST_BY].idxmin()] = "★ best"
    mark[runs["run_id"] == current] = mark[runs["run_id"] == current] + " ← this run"
    table.insert(0, "", mark.str.strip())
    table = table.rename(columns=RUN_COLUMNS).round(4)
    return table.rename(columns=lambda c: c.removeprefix("params.train."))


def progression(grids: list[Path], dest: Path, max_panels: int = 10) -> Path | None:
    """The book's figure 3.6: sample grids from the fixed z across training, side by side."""
    if not grids:
        return None
    step = max(1, -(-len(grids) // max_panels))
    chosen = grids[::step]
    if grids[-1] not in chosen:
        chosen.append(grids[-1])
    fig, axes = plt.subplots(1, len(chosen), figsize=(1.6 * len(chosen), 1.9), squeeze=False)
    for ax, path in zip(axes[0], chosen):
        ax.imshow(plt.imread(path), cmap="gray")
        ax.set_title(f"{int(path.stem.split('_')[-1]):,}", fontsize=8)
        ax.axis("off")
    fig.suptitle("Samples from a fixed z, by iteration", fontsize=9)
    fig.tight_layout()
    save_figure(fig, dest)
    plt.close(fig)
    return dest


def to_markdown(title: str, sections: list[Section], md_path: Path) -> str:
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        for block in sec.blocks:
            if block[0] == "p":
                lines += [block[1], ""]
            elif block[0] == "table":
                lines += [block[1].to_markdown(index=False) if len(block[1]) else "_none yet_", ""]
            elif block[0] == "img":
                rel = os.path.relpath(block[1], md_path.parent)
                lines += [f"![{block[2]}]({rel})", ""]
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def to_html(title: str, sections: list[Section]) -> str:
    """A single HTML page with every image embedded, so it opens from disk or as an MLflow artifact."""
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}",
        "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px}",
        "th{background:#f3f3f3}img{max-width:100%;margin:.3em 0}figure{margin:0 0 1em}",
        "figcaption{font-size:12px;color:#555}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for sec in sections:
        out.append(f"<h2>{html.escape(sec.title)}</h2>")
        for block in sec.blocks:
            if block[0] == "p":
                out.append(f"<p>{html.escape(block[1]).replace('`', '')}</p>")
            elif block[0] == "table":
                out.append(block[1].to_html(index=False, border=0, na_rep="") if len(block[1]) else "<p>none yet</p>")
            elif block[0] == "img":
                out.append(f"<figure><img alt='{html.escape(block[2])}' src='{_data_uri(block[1])}'>"
                           f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(title: str, sections: list[Section], md_path: Path, html_path: Path) -> None:
    """Write both forms atomically."""
    for path, text in ((md_path, to_markdown(title, sections, md_path)), (html_path, to_html(title, sections))):
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def metric_rows(quality: dict, reference: dict, noise: dict, ema: dict | None = None) -> pd.DataFrame:
    """Quality numbers of this generator between real data's and pure noise's, with which way is better;
    with `ema`, a column for the moving average of G's weights too."""
    better = {"frechet_distance": "lower", "classifier_score": "higher (max 10)", "modes_covered": "higher (max 10)",
              "kl_to_uniform": "lower", "unsure_share": "lower (real data's about 0.02)",
              "precision": "higher", "recall": "higher",
              "density": "about 1 (real data's)", "coverage": "higher (max 1)"}
    rows = []
    for k in better:
        row = {"metric": k, "real data": reference.get(k), "this generator": quality.get(k)}
        if ema is not None:
            row["its EMA"] = ema.get(k)
        rows.append({**row, "noise": noise.get(k), "better": better[k]})
    return pd.DataFrame(rows)


def identity(tcfg, m_prep: dict, m_train: dict, tags: dict, run_id: str, link: str) -> list[str]:
    """The lines that say which run this is: MLflow run, commit, data, model, length, device, precision."""
    lines = [
        f"MLflow run `{run_id}`: {link}",
        f"git commit `{tags.get('git_commit', 'unknown')[:12]}`"
        + (f" (uncommitted changes: {tags.get('git_changed', 'unlisted')})" if tags.get("git_dirty") == "true"
           else ""),
        f"data: MNIST from `{m_prep['source']}`, hash `{m_prep['data_hash']}`, "
        f"{m_prep['counts']['train']:,} train / {m_prep['counts']['test']:,} test images",
        f"model `{tcfg.model}`, {m_train['iterations']:,} iterations, D schedule `{tcfg.d_schedule}`, "
        f"seed {tcfg.seed}",
        f"device {tags.get('device', '?')} (CPU {tags.get('cpu', '?')}, native bf16: {tags.get('cpu_bf16', '?')}; "
        f"{tags.get('strategy', '?')}), backend {m_train.get('backend', 'tensorflow')}, "
        f"precision {m_train.get('precision', tags.get('precision', '?'))}, "
        f"oneDNN {m_train.get('onednn', tags.get('onednn', '?'))}, "
        f"{m_train['iterations_per_s']} iterations/s",
    ]
    if "dvc_experiment" in tags:
        baseline = tags.get("dvc_baseline_rev", "?")[:12]
        lines.append(f"DVC experiment `{tags['dvc_experiment']}` on baseline `{baseline}`")
    if m_train.get("resumed"):
        lines.append(f"resumed from a checkpoint at iteration {tags.get('resumed_at', '?')}")
    return lines


def sections(lines: list[str], train_dir: Path, evaluate_dir: Path, out_dir: Path, m_eval: dict, m_clf: dict,
             n_samples: int, runs: pd.DataFrame | None, run_id: str, m_train: dict | None = None) -> list[Section]:
    """The report's sections, in reading order, from the stages' outputs and metrics."""
    cm = m_eval["confusion"]
    prog = progression(sorted((train_dir / "samples").glob("iter_*.png")), out_dir / "progression.png")
    return [
        Section("Run", [("p", line) for line in lines]),
        Section("Training curves", [("img", train_dir / "loss.png", "Losses per sample interval"),
                                    ("img", train_dir / "accuracy.png", "Discriminator accuracy on real and fake")]),
        *([quality_section(m_train, train_dir)] if m_train and "best_iteration" in m_train else []),
        Section("Samples over training", [("img", prog, "Sample grids from the fixed z")] if prog else []),
        Section("Final samples", [("img", evaluate_dir / "grid_10x10.png", "100 samples from a fixed z"),
                                  ("img", evaluate_dir / "interpolation.png", "Latent interpolations"),
                                  ("img", evaluate_dir / "neighbours.png",
                                   "Samples (top) and their nearest training images (bottom)")]),
        Section("Discriminator on real test images vs fresh fakes", [
            ("p", f"TP {cm['tp']}, FN {cm['fn']}, TN {cm['tn']}, FP {cm['fp']}: accuracy {cm['accuracy']:.3f}, "
                  f"precision {cm['precision']:.3f}, recall {cm['recall']:.3f}, F1 {cm['f1']:.3f}; "
                  f"mean D(x) on real {cm['mean_d_real']:.3f}, on fake {cm['mean_d_fake']:.3f}."),
            ("img", evaluate_dir / "confusion.png", "Confusion matrix")]),
        Section("Sample quality", [
            ("p", f"Measured with a CNN classifier ({m_clf['test_accuracy']:.2%} test accuracy) on "
                  f"{n_samples:,} generated images against the test set; the real-data column "
                  "is train images measured the same way, the noise column uniform noise images."),
            ("table", metric_rows(m_eval["quality"], m_eval["reference"], m_eval.get("noise", {}),
                                  m_eval.get("quality_ema")))]),
        *([digit_section(m_eval, evaluate_dir)] if "label_agreement" in m_eval else []),
        *([code_section(m_eval, evaluate_dir)] if "code" in m_eval else []),
        Section("Runs in this experiment", [("table", runs_table(runs, run_id) if runs is not None else
                                             pd.DataFrame())]),
    ]


def digit_section(m_eval: dict, evaluate_dir: Path) -> Section:
    """A conditional G: how often the classifier reads the digit that was asked for, and one row per digit."""
    agree, ema = m_eval["label_agreement"], m_eval.get("label_agreement_ema")
    rows = pd.DataFrame({"digit": list(agree["per_digit"]), "label agreement": list(agree["per_digit"].values())})
    if ema:
        rows["its EMA"] = list(ema["per_digit"].values())
    return Section("The digit asked for", [
        ("p", f"Label agreement: {agree['overall']:.2%} of the generated images are read by the classifier as "
              "the digit they were asked for" + (f" ({ema['overall']:.2%} for its EMA)." if ema else ".")),
        ("table", rows),
        ("img", evaluate_dir / "digits.png", "One row per digit, 0 to 9, from the same ten z")])


def code_section(m_eval: dict, evaluate_dir: Path) -> Section:
    """A G that reads a code (`train.latent_modes`): which digit each value draws, how purely, how sure."""
    code, ema = m_eval["code"], m_eval.get("code_ema")
    values = sorted(code["digit"], key=int)  # the metrics file sorts its keys as text: 0, 1, 10, 11, ..., 2
    rows = pd.DataFrame({"value": values, "digit": [code["digit"][v] for v in values],
                         "share read as it": [code["share"][v] for v in values],
                         "unsure share": [code["unsure"][v] for v in values]})
    if ema:
        rows["its EMA: digit"] = [ema["digit"].get(v) for v in values]
        rows["its EMA: share"] = [ema["share"].get(v) for v in values]
    return Section("The latent's code", [
        ("p", f"{code['purity']:.2%} of the generated images are read by the classifier as the digit most "
              f"common among those of their value of the code; the values draw {code['distinct_digits']} "
              f"distinct digits over {len(values)} values"
              + (f" ({ema['purity']:.2%} and {ema['distinct_digits']} for its EMA)." if ema else ".")),
        ("table", rows),
        ("img", evaluate_dir / "codes.png", "One row per value of the code, the rest of the same ten z (of G)")])


def quality_section(m_train: dict, train_dir: Path) -> Section:
    """G's Fréchet distance at every sample interval (`ganlab.training.watch`), its best interval, and
    which G was kept."""
    best, kept, last = m_train["best_iteration"], m_train.get("kept_iteration"), m_train["iterations"]
    whose, keep = ("G's EMA", "best_ema") if m_train.get("best_by_ema") else ("G", "best")
    words = (f"The lowest Fréchet distance of {whose} while training was {m_train['best_frechet_distance']:.2f}, "
             f"at iteration {best:,}" + (", the last." if best == last else f", not the last ({last:,}): "
                            + (f"the output G is that iteration's (`train.keep: {keep}`)." if kept == best else
                               f"the output G is the last (`train.keep: last`); `train.keep: {keep}` keeps the best."))
             + f" Scoring took {m_train.get('quality_seconds', 0):.1f} s of the run's "
               f"{m_train.get('train_seconds', 0):.0f} s. These figures use fewer samples than the table below "
               "(the Fréchet distance reads higher with fewer): they compare iterations of this run.")
    curve = train_dir / "quality.png"  # none when no interval of the history was scored
    return Section("Sample quality over training",
                   [("p", words)] + ([("img", curve, "Fréchet distance per interval")] if curve.exists() else []))
