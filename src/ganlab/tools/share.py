"""One machine's share of a sweep: the grid expanded as `dvc exp run --queue -S` expands it, every k-th point.

Run: python -m ganlab.tools.share queue 1/3 -S train.seed=1,2,3 -S train.model=mlp,mlp_bn
     python -m ganlab.tools.share names 1/3 -S ...   (the experiments of that share, for `dvc exp push`)

Point i of the grid (DVC's order, counted from 1) goes to share ((i - 1) mod n) + 1, so machines that run
the same command with shares 1/n ... n/n split the grid between them, each point on exactly one. Each point
is queued under the name `<prefix>-<i>`, the prefix a hash of the grid, so the names agree across machines
and an experiment pulled from another machine never collides with one run here. `make sweep SHARE=k/n`
queues the share, runs it with DVC's queue and, with REMOTE, pushes it (`dvc exp push`).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys

from ganlab.core.cli import run_stage
from ganlab.core.files import StageError


def parse_share(text: str) -> tuple[int, int]:
    """"k/n" -> (k, n), with 1 <= k <= n."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise StageError(f"SHARE={text} is not k/n with 1 <= k <= n; write e.g. SHARE=1/3 on the first of "
                         "three machines, SHARE=2/3 on the second")
    return k, n


def grid(overrides: list[str]) -> list[list[str]]:
    """Every point of the grid `-S overrides` describe, in the order `dvc exp run --queue` queues them."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps

    try:
        sweeps = get_hydra_sweeps(to_path_overrides(overrides))
    except Exception as err:  # hydra's parse errors have no common base
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StageError(f"the sweep {' '.join(overrides)!r} does not parse as dvc exp run -S would: {reason}") from err
    return [[f"{path}:{o}" if path != "params.yaml" else o for path, values in point.items() for o in values]
            for point in sweeps]


def share(overrides: list[str], k: int, n: int, prefix: str | None = None) -> list[tuple[str, list[str]]]:
    """The (name, overrides) of each grid point in share k of n."""
    prefix = prefix or "grid-" + hashlib.sha1(" ".join(overrides).encode()).hexdigest()[:6]
    return [(f"{prefix}-{i}", point) for i, point in enumerate(grid(overrides), 1) if (i - 1) % n == k - 1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["queue", "names"])
    ap.add_argument("share", help="k/n: this machine is the k-th of n")
    ap.add_argument("-S", "--set-param", action="append", default=[], dest="overrides",
                    help="as dvc exp run -S (key=a,b,... sweeps)")
    ap.add_argument("--name", help="the experiments' name prefix (default: a hash of the grid)")
    args = ap.parse_args(argv)
    k, n = parse_share(args.share)
    if not args.overrides:
        raise StageError("no sweep given: pass the grid as -S key=a,b (make sweep SWEEP=\"-S ...\")")
    mine = share(args.overrides, k, n, args.name)
    if args.action == "names":
        print(" ".join(name for name, _ in mine))
        return
    # A share run again (after a failure, say) leaves alone the experiments it already holds on this commit.
    done = set(subprocess.run(["dvc", "exp", "list", "--name-only"], capture_output=True, text=True).stdout.split())
    for name, point in mine:
        if name in done:
            print(f"share {k}/{n}: {name} is already an experiment of this commit; not queued again", file=sys.stderr)
            continue
        cmd = ["dvc", "exp", "run", "--queue", "-n", name, *(a for o in point for a in ("-S", o))]
        if subprocess.run(cmd).returncode:
            raise StageError(f"dvc exp run --queue failed for {name}; see DVC's message above")
    queued = [name for name, _ in mine if name not in done]
    print(f"share {k}/{n}: {len(mine)} of the grid's {len(grid(args.overrides))} experiments; queued "
          f"{' '.join(queued) or 'none'}", file=sys.stderr)


if __name__ == "__main__":
    run_stage("share", main)
