"""Send MLflow writes queued in `mlflow-pending/` while the tracking store was away (`make resend`).

Each file is one run's queue (`RunLog.save_pending`); a replay is idempotent, so a file sent twice,
or half-sent before the store went away again, doubles nothing.

Run: python -m ganlab.tools.resend [mlflow-pending/*.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ganlab.core.cli import run_stage
from ganlab.core.files import StageError, read_json, write_json
from ganlab.tracking import store as tracking
from ganlab.tracking.runlog import PENDING_DIR, RunLog


def resend(path: Path) -> int:
    """Replay a pending file against the current tracking store; return how many writes still fail."""
    data = read_json(path, "queued MLflow writes")
    tracking.connect()
    run = RunLog(data["run_id"])
    for op in data["pending"]:
        run.submit(op)
    if run.pending:
        write_json(path, {**data, "pending": run.pending})
    else:
        path.unlink()
    return len(run.pending)


def main() -> None:
    ap = argparse.ArgumentParser(description="Send queued MLflow writes (mlflow-pending/*.json) to the store.")
    ap.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args()

    def go() -> None:
        files = args.files or sorted((tracking.project_root() / PENDING_DIR).glob("*.json"))
        tracking.check_server(tracking.tracking_uri())
        left = {f: resend(f) for f in files}
        sent = sum(1 for n in left.values() if n == 0)
        print(f"resend: {sent} of {len(files)} queued files sent to {tracking.redact(tracking.tracking_uri())}")
        if any(left.values()):
            raise StageError(f"{sum(left.values())} writes still failed; they stay queued, run it again later")

    run_stage("resend", go)


if __name__ == "__main__":
    sys.exit(main())
