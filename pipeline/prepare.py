"""Stage `prepare`: fetch verified MNIST and rescale it to [-1, 1].

Run: python pipeline/prepare.py --raw data/raw --out data/prepared --manifest metrics/prepare.json
"""

import argparse
from pathlib import Path

from ganlab.core.cli import run_stage
from ganlab.core.config import load_params
from ganlab.core.files import write_json
from ganlab.data.arrays import prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", type=Path, required=True, help="cache of the four IDX files")
    ap.add_argument("--out", type=Path, required=True, help="folder for the rescaled .npy arrays")
    ap.add_argument("--manifest", type=Path, required=True, help="manifest JSON (DVC metrics)")
    args = ap.parse_args()
    cfg = load_params(args.params).prepare
    manifest = prepare(cfg, args.raw, args.out)
    write_json(args.manifest, manifest)
    print(f"prepare: {manifest['counts']} images from {manifest['source']} -> {args.out}")


if __name__ == "__main__":
    run_stage("prepare", main)
