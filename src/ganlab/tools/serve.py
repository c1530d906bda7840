"""`make serve`: MLflow's scoring server for a generator, behind a guard that reads no oversize body.

Run: python -m ganlab.tools.serve --model models:/ganlab-generator@champion [--host 127.0.0.1] [--port 5001]

The app is MLflow's own (`mlflow.pyfunc.scoring_server.init`, what `mlflow models serve` runs), served
by uvicorn as `mlflow models serve` does. The guard:
- answers a Content-Length above what the largest allowed request needs (the served model's `max_batch` latent
  vectors, `ganlab.tracking.serving`) with HTTP 413 from the headers, before MLflow reads or parses
  anything (100,000 vectors are 84 MB of JSON); a body sent without a length is read up to that size,
  then refused or handed on (a model logged without `max_batch` gets no size guard);
- a 4xx answer whose message starts with the request's data (MLflow puts "Failed to predict data '<up to
  1 KB of the input>'. Error: " before every reason, its schema check's and `Generator.predict`'s) is
  turned round: the reason first, then the start of MLflow's words.
"""

from __future__ import annotations

import argparse
import json
import re

from ganlab.core.cli import run_stage
from ganlab.tracking import store as tracking

# A JSON number as json.dumps writes a float32 in full ("-1.2345678901234567e-05, "): 25 bytes at most.
BYTES_PER_NUMBER = 25
# Where MLflow's own words end and the reason begins: "... '<data>'. \nError: <reason>" (not "ValueError: ").
REASON = re.compile(r"(?:^|(?<=[\s.]))Error: ")


def body_limit(max_batch: int, z_dim: int, conditional: bool) -> int:
    """The largest body a request of `max_batch` vectors needs, with room for spacing and the JSON around it."""
    per_vector = (z_dim + (1 if conditional else 0)) * BYTES_PER_NUMBER + 8
    return max_batch * per_vector + 64 * 1024


def reason_first(message) -> str:
    """An MLflow error message with its reason (what follows its last "Error: ") first, and the data it
    quotes cut short after it."""
    if not isinstance(message, str) or not message.startswith("Failed to"):
        return message
    parts = REASON.split(message)
    if len(parts) < 2:
        return message
    return f"{parts[-1].strip()} [MLflow: {' '.join(message[:120].split())}...]"


class Guard:
    """ASGI middleware: the size check on the way in, the message order on the way out."""

    def __init__(self, app, limit: int | None, max_batch: int | None = None):
        self.app, self.limit, self.max_batch = app, limit, max_batch

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if self.limit and length is not None and length.isdigit() and int(length) > self.limit:
            return await self._too_large(send, int(length))
        if self.limit and length is None and scope.get("method") == "POST":
            # No length given (a chunked body): read it here, up to the limit, and hand it on whole.
            body, more = b"", True
            while more:
                event = await receive()
                body += event.get("body", b"")
                more = event.get("more_body", False)
                if len(body) > self.limit:
                    return await self._too_large(send, len(body), at_least=True)
            sent = False

            async def receive():  # noqa: F811  (the app reads the buffered body once)
                nonlocal sent
                if sent:
                    return {"type": "http.disconnect"}
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, receive, self._reasons_first(send))

    async def _too_large(self, send, size: int, at_least: bool = False) -> None:
        message = (f"the request body is {'over ' if at_least else ''}{size:,} bytes; one request holds at most "
                   f"{self.max_batch} latent vectors ({self.limit:,} bytes): split it")
        await _answer(send, 413, {"error_code": "REQUEST_TOO_LARGE", "message": message})

    @staticmethod
    def _reasons_first(send):
        """`send` with each 4xx answer's JSON message reordered (the body gathered first, however it comes)."""
        start: dict = {}
        parts: list[bytes] = []

        async def reorder(event):
            if event["type"] == "http.response.start":
                start.update(event)
                if not 400 <= event["status"] < 500:
                    await send(event)
                return
            if not start or not 400 <= start["status"] < 500:
                return await send(event)
            parts.append(event.get("body", b""))
            if event.get("more_body", False):
                return
            body = b"".join(parts)
            try:  # MLflow's error answers are one JSON object with a message
                answer = json.loads(body)
                answer["message"] = reason_first(answer["message"])
                body = json.dumps(answer).encode()
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        return reorder


async def _answer(send, status: int, answer: dict) -> None:
    body = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models:/ganlab-generator@champion")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5001)
    args = ap.parse_args()
    import mlflow.pyfunc
    import uvicorn
    from mlflow.pyfunc import scoring_server

    tracking.connect()
    model = mlflow.pyfunc.load_model(args.model)
    served = model.unwrap_python_model()
    most = getattr(served, "max_batch", None)
    limit = body_limit(most, served.z_dim, served.conditional) if most else None
    app = Guard(scoring_server.init(model), limit, most)
    print(f"serving {args.model} on http://{args.host}:{args.port}/invocations", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    run_stage("serve", main)
