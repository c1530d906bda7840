"""Stage `validate`: check the whole params.yaml, and the tracking store, before any other stage runs.

DVC deletes a stage's outputs just before it runs the stage, so a bad value found by the stage
itself has already cost the last good outputs. Every stage depends on this one's output, which
never changes while params.yaml is valid: the order is enforced, and nothing goes stale.

Run: python pipeline/validate.py --out outputs/validate/params.ok
"""

import argparse
from pathlib import Path

from ganlab.core.cli import run_stage
from ganlab.core.config import load_params
from ganlab.core.files import write_bytes
from ganlab.nets.specs import resolve
from ganlab.tracking import store as tracking


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    params = load_params(args.params)  # raises ConfigError, one line, on the first bad key or value
    resolve(params.train)  # and on settings that only the model's reference values make wrong
    # Also before anything is deleted: a tracking store that is down, or one copied from another folder.
    tracking.check_store(params.train.experiment)
    write_bytes(args.out, b"params.yaml is valid\n")


if __name__ == "__main__":
    run_stage("validate", main)
