"""Draw digits from any logged or registered generator into one PNG grid.

Run: python -m ganlab.tools.sample --n 64 --out grid.png   (the registered champion)
     python -m ganlab.tools.sample --model models:/ganlab-generator@champion --n 64 --out grid.png
     (also runs:/<run_id>/generator, or a local outputs/train/generator.keras)
     python -m ganlab.tools.sample --digit 7 --n 64   (the conditional champion)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from ganlab.core.cli import run_stage
from ganlab.core.files import StageError


def load(uri: str):
    """A Keras generator from an MLflow model URI or a local `.keras` file (safe mode on)."""
    if Path(uri).suffix == ".keras":
        from ganlab.nets.saving import load_model

        return load_model(Path(uri))
    import mlflow
    import mlflow.keras
    import mlflow.pyfunc

    from ganlab.tracking import store as tracking

    tracking.connect()
    try:
        if "keras" in mlflow.models.get_model_info(uri).flavors:
            return mlflow.keras.load_model(uri)
        # The served pyfunc (what the registry holds): the Keras model inside it.
        return mlflow.pyfunc.load_model(uri).unwrap_python_model().generator
    except Exception as exc:  # MLflow raises several types for an unknown URI
        raise StageError(f"cannot load {uri} ({type(exc).__name__}: {str(exc)[:120]}); "
                         "check the name, alias or run id in the MLflow UI (`make ui`)") from None


def takes_digit(uri: str) -> bool | None:
    """Whether the logged model at `uri` takes a digit, from its signature (without loading it); None if
    that cannot be told (a local file, a model logged without a signature)."""
    if Path(uri).suffix == ".keras":
        return None
    import mlflow

    from ganlab.tracking import store as tracking

    tracking.connect()
    try:
        signature = mlflow.models.get_model_info(uri).signature
    except Exception:  # an unknown URI: load() says so in one line
        return None
    return None if signature is None else "digit" in signature.inputs.input_names()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="models:/NAME@ALIAS, runs:/RUN/generator or a .keras file (default: the "
                                    "registered champion; with --digit, the conditional one)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("samples.png"))
    ap.add_argument("--npy", type=Path, help="also save the images, (n, 28, 28, 1) in [-1, 1], as a .npy file")
    ap.add_argument("--digit", help="conditional models: the digit to draw, 0-9, or `all` for a 10x10 grid, "
                                    "one row per digit (default: 0-9 in turn)")
    args = ap.parse_args()
    if not 1 <= args.n <= 1024:
        raise StageError(f"--n {args.n} is out of range; use 1..1024")
    if args.digit is not None and args.digit != "all" and args.digit not in list("0123456789"):
        raise StageError(f"--digit {args.digit} is not a digit; use 0..9 or all")
    if args.model is None:
        from ganlab.core.config import load_params
        from ganlab.tracking import registry

        base = load_params().report.registered_model if Path("params.yaml").exists() else "ganlab-generator"
        args.model = registry.champion_uri(base, conditional=args.digit is not None)
    if args.digit is not None and takes_digit(args.model) is False:
        raise StageError(f"{args.model} is not conditional: it cannot be asked for a digit; drop --digit "
                         "or use a cdcgan generator")
    from ganlab.nets.models import draw, is_conditional
    from ganlab.report.plots import save_grid

    generator = load(args.model)
    if args.digit is not None and not is_conditional(generator):
        raise StageError(f"{args.model} is not conditional: it cannot be asked for a digit; drop --digit "
                         "or use a cdcgan generator")
    z_dim = next(t for t in generator.inputs if t.name != "digit").shape[-1]
    digits, cols = None, math.ceil(math.sqrt(args.n))
    if args.digit == "all":  # ten z, each drawn as every digit: one row per digit
        args.n, cols = 100, 10
    z = np.random.default_rng(args.seed).standard_normal((args.n, z_dim)).astype(np.float32)
    if args.digit == "all":
        z, digits = np.tile(z[:10], (10, 1)), np.repeat(np.arange(10), 10)
    elif args.digit is not None:
        digits = np.full(args.n, int(args.digit))
    images = draw(generator, z, digits)
    save_grid(images, math.ceil(args.n / cols), args.out, cols=cols)
    if args.npy:
        np.save(args.npy, images)
    what = f"digit {args.digit}" if args.digit not in (None, "all") else "digits"
    print(f"sample: {args.n} {what} from {args.model} -> {args.out}")


if __name__ == "__main__":
    run_stage("sample", main)
