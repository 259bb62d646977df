"""The HTTP face of `textlora serve`: FastAPI routes, request schemas, limits and metrics.

| route | what |
|---|---|
| `POST /v1/classify` | `{"model": NAME, "texts": [...]}` -> per text the label(s) and per-label scores |
| `GET /v1/models` | each served run: name, base, labels, method, metrics |
| `GET /healthz`, `HEAD /healthz` | 200 once every run is loaded |
| `GET /metrics` | Prometheus text (`metrics.py`): requests, latency, batch sizes, queue depth, in-flight texts |
| `GET /openapi.json` | the OpenAPI schema (limits included as maxItems / maxLength) |
| `GET /`, `HEAD /` | a page to try the runs in a browser (`page.py`); not in the schema |

Errors are JSON `{"detail": message}`: 413 body too large (checked before parsing), 408 body not
received within `body_timeout_s`, 422 malformed JSON, a wrong field, too many texts, a text or a model
name too long, 404 unknown model (the known ones listed), 503 + Retry-After when `max_queue` texts are
waiting, 500 when the forward pass fails for this request's texts (and only for them: see
`batching.py`). The client only ever names a run given at start-up, never a path. A request whose
client went away before its response is counted in /metrics as status 499 (nginx's "client closed
request"), not 500.

This is the only module that imports FastAPI (no `from __future__ import annotations` here:
FastAPI reads the annotations of routes defined inside `build_app`).
"""

import asyncio
import logging
import time
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from textlora.errors import TextloraError
from textlora.heads import KINDS, LabelKind
from textlora.serve.batching import MicroBatcher, ServerBusy
from textlora.serve.metrics import CONTENT_TYPE, ServerMetrics
from textlora.serve.options import ServeOptions
from textlora.serve.page import HEADERS as PAGE_HEADERS
from textlora.serve.page import PAGE
from textlora.serve.registry import Registry

ROUTES = ("/v1/classify", "/v1/models", "/healthz", "/metrics", "/openapi.json", "/")
"""Paths recorded by name in metrics; any other path is recorded as 'other' (bounded label values)."""
MAX_MODEL_CHARS = 64
"""Longest `model` a request may name: served run names are 1-64 characters (`registry.NAME_PATTERN`)."""
CLIENT_CLOSED = 499
"""Status recorded in /metrics for a request whose client went away before a response (nginx's code)."""
RETRY_AFTER_S = 1
"""Seconds a 503 (queue full) asks the client to wait before retrying."""
log = logging.getLogger("textlora.serve")


class Prediction(BaseModel):
    label: str = Field(description="The highest-scoring label.")
    labels: list[str] = Field(description="Predicted labels: [label], or every label scoring at or over "
                                           "its threshold (multi-label; GET /v1/models gives them).")
    scores: dict[str, float] = Field(description="Score per label: softmax (of the logits divided by the run's "
                                                 "temperature), or per-label sigmoid (multi-label).")


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction] = Field(description="One per input text, in input order.")


class ModelInfo(BaseModel):
    name: str
    method: str = Field(description="lora, qlora, full or head.")
    base: dict[str, Any] = Field(description="Base model name, architecture, weight sha256, and whether "
                                             "this server shares it with other runs.")
    labels: list[str]
    multi_label: bool
    metrics: dict[str, Any] = Field(description="Validation and test metrics recorded at training time.")
    thresholds: dict[str, float] | None = Field(None, description="Multi-label runs: each label's decision "
                                                                   "threshold (tuned on validation); null otherwise.")
    temperature: float = Field(1.0, description="The logits are divided by it before the softmax: the run's "
                                                "calibration (1.0: none, or the server runs with --no-calibrate).")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: str
    models: int


class ErrorResponse(BaseModel):
    detail: str = Field(description="What was wrong and how to fix it.")
    errors: list[dict[str, Any]] | None = Field(None, description="Each schema violation (422 only).")


ERRORS = {code: {"model": ErrorResponse} for code in (404, 408, 413, 422, 500, 503)}


def build_app(registry: Registry, options: ServeOptions, metrics: ServerMetrics | None = None) -> Any:
    """The ASGI app serving `registry`: FastAPI routes wrapped in the body-size limit and request metrics.

    Raises nothing at build time; start the batcher by running the app (its lifespan does it).
    """
    import contextlib

    metrics = metrics or ServerMetrics()
    batcher = MicroBatcher(registry.scores, registry.names, options.max_batch, options.max_wait_ms / 1000,
                           options.batching, metrics.observe_batch, max_queue=options.max_queue)
    metrics.watch_queue(lambda: max(0, batcher.queued - batcher.running), lambda: batcher.running)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="textlora serve", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Text classifiers fine-tuned with textlora; runs on one base share it in memory.")
    app.add_exception_handler(RequestValidationError, _validation_handler(options))
    app.add_exception_handler(StarletteHTTPException, _unparsable_body_handler)
    app.add_exception_handler(Exception, _server_error_handler)  # JSON, not Starlette's plain-text 500
    ClassifyRequest = _request_model(options, registry.names)  # noqa: N806 - a class, built from the limits

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS)
    async def classify(req: ClassifyRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        """Classify texts with one of the served runs."""
        run = registry.runs.get(req.model)
        if run is None:
            raise HTTPException(404, f"unknown model {req.model!r}; this server has {registry.names}. "
                                     "GET /v1/models lists them.")
        scores = await _scores(batcher, req.model, list(req.texts))
        return {"model": req.model, "predictions": [_prediction(run.labels, row, run.thresholds, run.kind)
                                                   for row in scores]}

    @app.get("/v1/models", response_model=ModelsResponse)
    async def models() -> dict[str, Any]:
        """The served runs."""
        return {"models": [registry.runs[n].info() for n in registry.names]}

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict[str, Any]:
        """Liveness: the server answers once every run is loaded."""
        return {"status": "ok", "models": len(registry.runs)}

    @app.head("/healthz", include_in_schema=False)  # load balancers probe with HEAD; kept out of the schema
    async def healthz_head() -> dict[str, Any]:
        return await healthz()

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        """Prometheus text format."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)  # for people, not a model-facing API
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers=PAGE_HEADERS)

    return RequestMetrics(BodyLimit(app, options.max_body_bytes, options.body_timeout_s), metrics)


async def _scores(batcher: MicroBatcher, model: str, texts: list[str]) -> Any:
    """The batcher's scores, its failures turned into JSON errors: 503 busy, 422 or 500 for these texts."""
    try:
        return await batcher.submit(model, texts)
    except ServerBusy as e:
        raise HTTPException(503, str(e), headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except TextloraError as e:
        raise HTTPException(422, str(e)) from None
    except Exception as e:  # noqa: BLE001 - these texts failed alone (batching.py retried them): a 500 for them only
        log.error("classify: the forward pass failed for a request of %d texts", len(texts), exc_info=e)
        raise HTTPException(500, f"classifying these texts failed ({type(e).__name__}: {str(e)[:200]}); "
                                 "other requests are unaffected. If the same texts fail again, report them.") from None


def _request_model(options: ServeOptions, names: list[str]) -> type[BaseModel]:
    """The request schema, with this server's limits in it (and so in /openapi.json)."""
    text = Annotated[str, StringConstraints(max_length=options.max_chars)]  # lone surrogates: pydantic says 422
    return create_model(
        "ClassifyRequest",
        __config__=ConfigDict(extra="forbid"),
        model=(Annotated[str, StringConstraints(max_length=MAX_MODEL_CHARS)],
               Field(description=f"Name of a served run (GET /v1/models); here one of {names}.", examples=names[:1])),
        texts=(list[text], Field(min_length=1, max_length=options.max_texts, examples=[["i feel wonderful today"]],
                                 description=f"1 to {options.max_texts} texts of at most "
                                             f"{options.max_chars} characters each.")),
    )


def _prediction(labels: list[str], row: Any, thresholds: list[float] | None,
                kind: LabelKind | None = None) -> dict[str, Any]:
    """One text's answer: the top label, the labels the run's `kind` chooses (single-label: the top one;
    multi-label: every label at or over its own of `thresholds`) and the scores. Without `kind`, the kind the
    thresholds imply: a run has them exactly when it is multi-label (`Run.thresholds`)."""
    kind = kind or KINDS[thresholds is not None](labels)
    t = None if thresholds is None else np.asarray(thresholds)
    chosen = [n for n, c in zip(labels, kind.chosen(np.asarray(row)[None, :], t)[0]) if c]
    return {"label": labels[int(row.argmax())], "labels": chosen,
            "scores": {n: round(float(s), 6) for n, s in zip(labels, row)}}


LIMIT_HINTS = {
    ("texts", "too_long"): "at most {max_texts} texts per request; split the request "
                           "(the server's limit is --max-texts {max_texts})",
    ("texts.*", "string_too_long"): "at most {max_chars} characters per text; shorten or split the text "
                                    "(the server's limit is --max-chars {max_chars})",
    ("texts", "too_short"): "give at least one text",
    ("model", "string_too_long"): f"a run name has at most {MAX_MODEL_CHARS} characters; GET /v1/models lists them",
    ("json_invalid",): 'the body is not valid JSON; send {{"model": NAME, "texts": ["...", ...]}}',
}
"""Clearer messages for the schema errors a client most likely hits, keyed by (field, pydantic type)."""


def _validation_handler(options: ServeOptions):
    """422 with one readable message, plus each error's location and type (never the input: it may be huge)."""

    async def handler(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
                  for e in exc.errors()]
        parts = []
        for e in errors[:5]:
            field = ".".join(e["loc"][1:]) if e["loc"][:1] == ["body"] else ".".join(e["loc"])
            if e["type"] == "json_invalid":  # pydantic puts the character offset where a field would be
                field = f"body (character {field})" if field else ""
            pattern = "texts.*" if field.startswith("texts.") else field
            hint = LIMIT_HINTS.get((pattern, e["type"])) or LIMIT_HINTS.get((e["type"],))
            parts.append(f"{field or 'body'}: {hint.format(**vars(options)) if hint else e['msg']}")
        detail = "; ".join(parts) or "the request does not match the schema at /openapi.json"
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    return handler


async def _unparsable_body_handler(request: Request, exc: StarletteHTTPException) -> Any:
    """FastAPI answers 400 to a body that is not even text (invalid UTF-8); it is malformed JSON: 422."""
    if exc.status_code == 400 and request.method == "POST":
        detail = 'the body is not valid JSON (it must be UTF-8 text); send {"model": NAME, "texts": ["...", ...]}'
        return JSONResponse({"detail": detail}, status_code=422)
    return await http_exception_handler(request, exc)


async def _server_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Any unexpected error: a JSON 500 like every other error (Starlette then re-raises it, so it is logged)."""
    return JSONResponse({"detail": _SERVER_ERROR}, status_code=500)


_SERVER_ERROR = "internal server error while handling this request; other requests are unaffected. Retry, or report it."


class BodyLimit:
    """ASGI wrapper: 413 for a body over `max_bytes`, before any JSON parsing; 408 for a body that takes
    longer than `timeout` seconds to arrive (a slow client pins its buffered bytes meanwhile).

    Checks Content-Length first, then counts the bytes that actually arrive (a chunked body has no
    Content-Length), and replays the buffered body to the app. Both rejections close the connection:
    the rest of the body is never read.
    """

    def __init__(self, app: Any, max_bytes: int, timeout: float = 10.0):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._reject(scope, receive, send, declared.decode("latin-1"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
            except asyncio.TimeoutError:  # not the builtin before Python 3.11
                detail = (f"the request body did not arrive within {self.timeout:g} s (--body-timeout-s); "
                          f"{size} bytes came. Send the whole body at once.")
                return await _close_with(scope, receive, send, 408, detail)
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._reject(scope, receive, send, f"more than {size}")
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _reject(self, scope: dict, receive: Any, send: Any, size: str) -> None:
        detail = (f"request body is {size} bytes; this server accepts at most {self.max_bytes} "
                  "(--max-body-bytes). Send fewer or shorter texts per request.")
        await _close_with(scope, receive, send, 413, detail)


async def _close_with(scope: dict, receive: Any, send: Any, status: int, detail: str) -> None:
    """A JSON error that also closes the connection (its unread body would otherwise keep it open)."""
    await JSONResponse({"detail": detail}, status_code=status, headers={"connection": "close"})(scope, receive, send)


class RequestMetrics:
    """ASGI wrapper: count every HTTP request by path and status, and time it.

    A request that ends without a response because its client went away is counted as 499, not 500;
    an error that escapes every handler before a response started gets a JSON 500 here.
    """

    def __init__(self, app: Any, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, gone = time.perf_counter(), None, False
        self.metrics.in_progress.inc()

        async def receive_and_watch() -> dict:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def send_and_record(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive_and_watch, send_and_record)
        except Exception:
            if status is None:
                await JSONResponse({"detail": _SERVER_ERROR}, status_code=500)(scope, receive, send_and_record)
            raise
        finally:
            self.metrics.in_progress.dec()
            if status is None:
                status = CLIENT_CLOSED if gone else 500
            path = scope.get("path", "")
            self.metrics.observe_request(path if path in ROUTES else "other", status, time.perf_counter() - start)


def _version() -> str:
    from textlora import __version__

    return __version__
