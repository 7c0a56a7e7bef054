"""The activation server: FastAPI routes over `processing.Debugger`.

Routes only parse (the pydantic models in `schemas` are the contract), call the library and
return. Model work runs in a worker thread, one request at a time, so the event loop keeps
answering (CORS preflights, /model_info) while a long request computes. Every failure is a JSON
object with a `message` (what the original client shows), with CORS headers, never a crash.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import threading
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import NotFound, RequestError, ServiceUnavailable
from neuron_explainer.activation_server.processing import Debugger
from neuron_explainer.activation_server.static import DEFAULT_DIST, mount_viewer

log = logging.getLogger("neuron_explainer.activation_server")
T = TypeVar("T")

# Browsers on this machine only: http(s)://localhost or 127.0.0.1, any port.
LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1)(:\d+)?"


class ORJSONResponse(JSONResponse):
    """orjson is several times faster than the stdlib for the large node tables."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _error(status: int, message: str, **extra: Any) -> ORJSONResponse:
    return ORJSONResponse({"message": message, **extra}, status_code=status)


def create_app(debugger: Debugger | None) -> FastAPI:
    """The app; `debugger` None is the no-model mode (schema and read routes only)."""
    app = FastAPI(
        title="Transformer Debugger activation server",
        generate_unique_id_function=S.operation_id,
        default_response_class=ORJSONResponse,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origin_regex=LOCAL_ORIGINS,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    lock = threading.Lock()  # one model computation at a time (memory, and torch threads)

    def loaded() -> Debugger:
        if debugger is None:
            raise ServiceUnavailable(
                "no model is loaded: restart the server with --model NAME or --model-path FOLDER"
            )
        return debugger

    async def compute(fn: Callable[[Debugger], T]) -> T:
        d = loaded()

        def locked() -> T:
            with lock:
                return fn(d)

        return await run_in_threadpool(locked)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":  # loc is ("body", character offset)
                at = [p for p in err.get("loc", ()) if p != "body"]
                reason = (err.get("ctx") or {}).get("error", err.get("msg"))
                problems.append(f"body: malformed JSON at character {at[0] if at else '?'}: {reason}")
                continue
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where or 'body'}: {err.get('msg')}")
        return _error(422, "; ".join(problems), detail=orjson.loads(orjson.dumps(exc.errors(), default=str)))

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, exc: RequestError) -> Response:
        return _error(400, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return _error(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable) -> Response:
        return _error(503, str(exc))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        # Reached from inside the routing stack, so CORS headers are still added.
        log.exception("unhandled error in %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.middleware("http")
    async def catch_all(request: Request, call_next: Callable[[Request], Any]) -> Response:
        try:
            response: Response = await call_next(request)
            return response
        except Exception as exc:
            log.exception("unhandled error in %s", request.url.path)
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ hello

    @app.get("/", tags=["hello_world"])
    async def read_root() -> dict[str, str]:
        return {"message": "Transformer Debugger activation server", "docs": "/docs"}

    @app.get("/force_client_code_generation", tags=["hello_world"])
    async def force_client_code_generation(group_id: S.GroupId) -> None:
        """Only here so the generated client includes GroupId."""
        return None

    # -------------------------------------------------------------- inference

    @app.post("/model_info", tags=["inference"], response_model=S.ModelInfoResponse)
    async def model_info() -> Any:
        # no model computation: answered at once, even while a long request holds the lock
        return loaded().model_info().model_dump(mode="json", by_alias=True)

    @app.post("/batched_tdb", tags=["inference"], response_model=S.BatchedResponse)
    async def batched_tdb(request: S.BatchedTdbRequest) -> Any:
        return await compute(lambda d: _dump(d.batched_tdb(request)))

    @app.post("/batched", tags=["inference"], response_model=S.BatchedResponse)
    async def batched(request: S.BatchedRequest) -> Any:
        return await compute(lambda d: _dump(d.batched(request)))

    @app.post("/derived_scalars", tags=["inference"], response_model=S.DerivedScalarsResponse)
    async def derived_scalars(request: S.DerivedScalarsRequest) -> Any:
        spec = request.derived_scalars_request_spec
        return await compute(lambda d: _single(d, request.inference_request_spec, spec, "derived_scalars_response_data"))

    @app.post("/derived_attention_scalars", tags=["inference"], response_model=S.DerivedAttentionScalarsResponse)
    async def derived_attention_scalars(request: S.DerivedAttentionScalarsRequest) -> Any:
        spec = request.derived_attention_scalars_request_spec
        return await compute(lambda d: _single(d, request.inference_request_spec, spec, "derived_attention_scalars_response_data"))

    @app.post("/multiple_top_k_derived_scalars", tags=["inference"], response_model=S.MultipleTopKDerivedScalarsResponse)
    async def multiple_top_k_derived_scalars(request: S.MultipleTopKDerivedScalarsRequest) -> Any:
        spec = request.multiple_top_k_derived_scalars_request_spec
        return await compute(lambda d: _single(d, request.inference_request_spec, spec, "multiple_top_k_derived_scalars_response_data"))

    # ------------------------------------------ read and explainer (not yet built)

    @app.post("/neuron_datasets_metadata", tags=["read"], response_model=list[S.NeuronDatasetMetadata])
    async def neuron_datasets_metadata() -> Any:
        return []  # no neuron datasets are registered with this server

    def no_dataset(names: list[str]) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"no neuron dataset is registered with this server (asked for {names}); "
            "dataset records are not served yet"
        )

    @app.post("/neuron_record", tags=["read"], response_model=S.NeuronRecordResponse)
    async def neuron_record(request: S.NodeIdAndDatasets) -> Any:
        raise no_dataset(request.datasets)

    @app.post("/attention_head_record", tags=["read"], response_model=S.AttentionHeadRecordResponse)
    async def attention_head_record(request: S.NodeIdAndDatasets) -> Any:
        raise no_dataset(request.datasets)

    @app.post("/existing_explanations", tags=["read"], response_model=list[S.AttributedScoredExplanation])
    async def existing_explanations(request: S.ExistingExplanationsRequest) -> Any:
        raise no_dataset(request.explanation_datasets or [request.neuron_dataset or ""])

    @app.post("/explain", tags=["explainer"], response_model=S.ExplanationResult)
    async def explain(request: S.NodeIdAndDatasets) -> Any:
        raise ServiceUnavailable("no explainer LLM endpoint is configured on this server")

    @app.post("/score", tags=["explainer"], response_model=S.ScoreResult)
    async def score(request: S.ScoreRequest) -> Any:
        raise ServiceUnavailable("no explainer LLM endpoint is configured on this server")

    return app


def _dump(model: Any) -> Any:
    # model_dump once here; FastAPI then validates the dict against response_model for the schema
    return model.model_dump(mode="json", by_alias=True)


def _single(d: Debugger, inference: S.InferenceRequestSpec, spec: Any, data_field: str) -> Any:
    """The non-batched routes: a batch of one sub-request with one processing step."""
    batched = d.batched(
        S.BatchedRequest(
            inference_sub_requests=[
                S.InferenceSubRequest(inference_request_spec=inference, processing_request_spec_by_name={"singleton": spec})
            ]
        )
    )
    sub = batched.inference_sub_responses[0]
    return {
        "inferenceAndTokenData": sub.inference_response.inference_and_token_data.model_dump(mode="json", by_alias=True),
        re.sub(r"_([a-z])", lambda m: m.group(1).upper(), data_field): _dump(sub.processing_response_data_by_name["singleton"]),
    }


# ---------------------------------------------------------------------- CLI


def build_debugger(args: argparse.Namespace) -> Debugger:
    import torch

    from neuron_explainer.models.autoencoder import attach, load_autoencoder_set
    from neuron_explainer.models.loading import load_model
    from neuron_explainer.models.tokenizer import get_tokenizer

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    device = args.device or ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    model = load_model(args.model_path or args.model, device=device, dtype=dtype)
    # The debugger needs gradients of activations, never of weights.
    for p in model.parameters():
        p.requires_grad_(False)
    names = {}
    for kind, name in (("mlp", args.mlp_autoencoder), ("attention", args.attention_autoencoder)):
        if name:
            spec, aes = load_autoencoder_set(name, model.cfg.n_layers, device=device)
            if spec.kind != kind:
                raise ValueError(f"--{kind}-autoencoder {name!r} reads {spec.reads}, not {kind} activations")
            attach(model, spec, aes)
            for ae in aes:
                for p in ae.parameters():
                    p.requires_grad_(False)
            names[kind] = name
    enc = get_tokenizer(model.tokenizer_path)
    return Debugger(model, enc, args.model_name or args.model, names.get("mlp"), names.get("attention"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Transformer Debugger activation server")
    p.add_argument("--model", default="gpt2-small", help="registry name (gpt2-small, ...) or a model folder / URL")
    p.add_argument("--model-path", help="a local model folder (OpenAI, Hugging Face or our layout); overrides --model")
    p.add_argument("--model-name", help="name reported by /model_info (default: --model)")
    p.add_argument("--mlp-autoencoder", help="autoencoder set name (e.g. ae-mlp-post-act-v4) or folder")
    p.add_argument("--attention-autoencoder", help="autoencoder set name (e.g. ae-resid-delta-attn-v4) or folder")
    p.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-model", action="store_true", help="serve the schema and read routes only")
    p.add_argument("--viewer-dist", type=Path, help="built neuron viewer (default: neuron_viewer/dist)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    debugger = None
    if not args.no_model:
        try:
            debugger = build_debugger(args)
        except (ValueError, RuntimeError, OSError) as exc:
            # one line saying what is wrong and what to do (the loaders' errors already do)
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    app = create_app(debugger)
    mount_viewer(app, args.viewer_dist or DEFAULT_DIST)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
