"""`make serve`'s guard around MLflow's scoring app: an oversize body refused unread, reasons first."""

from __future__ import annotations

import asyncio
import json

from ganlab.tools import serve

PREDICT_ERROR = ("Failed to predict data '" + "[0.0, " * 200 + "'. \nError: Failed to enforce schema of data '"
                 + "[0.0, " * 200 + "' with schema '['z': Tensor('float32', (-1, 100))]'. "
                 "Error: Shape of input (1, 99) does not match expected shape (-1, 100)")


def call(app, headers: list[tuple[bytes, bytes]], body: bytes = b"{}") -> tuple[int, dict, bool]:
    """One request through `app`; returns (status, JSON answer, whether the body was read)."""
    read, sent = [], []

    async def receive():
        read.append(True)
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(event):
        sent.append(event)

    asyncio.run(app({"type": "http", "method": "POST", "path": "/invocations", "headers": headers}, receive, send))
    start = next(e for e in sent if e["type"] == "http.response.start")
    answer = b"".join(e.get("body", b"") for e in sent if e["type"] == "http.response.body")
    assert dict(start["headers"])[b"content-length"] == str(len(answer)).encode()
    return start["status"], json.loads(answer), bool(read)


def inner(status: int, answer: dict):
    async def app(scope, receive, send):
        await receive()
        body = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    return app


def test_an_oversize_body_is_refused_by_its_length_without_being_read():
    limit = serve.body_limit(1024, 100, conditional=False)
    # The largest allowed request fits: 1,024 vectors of 100 float32 numbers written in full.
    largest = json.dumps({"inputs": [[-1.2345678901234567e-05] * 100] * 1024}).encode()
    assert len(largest) < limit < 100_000 * 100 * 8
    guard = serve.Guard(inner(200, {"predictions": []}), limit, 1024)
    status, answer, read = call(guard, [(b"content-length", str(84_000_000).encode())])
    assert status == 413 and not read
    assert answer["message"].startswith("the request body is 84,000,000 bytes; one request holds at most 1024")
    status, _, read = call(guard, [(b"content-length", str(len(largest)).encode())], largest)
    assert status == 200 and read


def test_an_error_answer_puts_the_reason_first_and_others_pass_unchanged():
    guard = serve.Guard(inner(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": PREDICT_ERROR}), None)
    status, answer, _ = call(guard, [])
    assert status == 400
    assert answer["message"].startswith("Shape of input (1, 99) does not match expected shape (-1, 100) [MLflow: ")
    assert len(answer["message"]) < 300 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
    ok = {"predictions": [[1.0]]}
    assert call(serve.Guard(inner(200, ok), None), [])[:2] == (200, ok)
    plain = {"message": "inputs must be a list of latent vectors of 100 numbers each; got shape [3]"}
    assert call(serve.Guard(inner(400, plain), None), [])[1] == plain
    assert call(serve.Guard(inner(400, {"message": 3}), None), [])[:2] == (400, {"message": 3})
    # An exception's name is not where MLflow's words end.
    assert serve.reason_first("Failed to predict data '[1]'. \nError: ValueError: bad z") == (
        "ValueError: bad z [MLflow: Failed to predict data '[1]'. Error: ValueError: bad z...]")


def test_a_body_without_a_length_is_read_up_to_the_limit_then_refused_or_handed_on():
    chunks = [b"x" * 600, b"y" * 600]
    guard = serve.Guard(inner(200, {"ok": 1}), 1000, 8)

    async def one(scope_headers, body_parts):
        parts = list(body_parts)
        sent = []

        async def receive():
            return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

        async def send(event):
            sent.append(event)

        await guard({"type": "http", "method": "POST", "path": "/invocations", "headers": scope_headers},
                    receive, send)
        return sent[0]["status"], b"".join(e.get("body", b"") for e in sent[1:])

    status, body = asyncio.run(one([], chunks))
    assert status == 413 and b"over 1,200 bytes" in body
    seen = []

    async def echo(scope, receive, send):
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    guard.app = echo
    assert asyncio.run(one([], [b"a" * 300, b"b" * 300]))[0] == 200
    assert seen == [{"type": "http.request", "body": b"a" * 300 + b"b" * 300, "more_body": False}]


def test_a_4xx_body_in_parts_is_gathered_before_it_is_reordered():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 400, "headers": []})
        text = json.dumps({"message": PREDICT_ERROR}).encode()
        await send({"type": "http.response.body", "body": text[:50], "more_body": True})
        await send({"type": "http.response.body", "body": text[50:], "more_body": False})

    status, answer, _ = call(serve.Guard(app, None), [])
    assert status == 400 and answer["message"].startswith("Shape of input (1, 99)")
