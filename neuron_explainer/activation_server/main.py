"""The activation server: FastAPI routes over `processing.Debugger`.

Routes only parse (the pydantic models in `schemas` are the contract), call the library and
return. Model work runs in a worker thread, one request at a time, so the event loop keeps
answering (CORS preflights, /model_info) while a long request computes. Every failure is a JSON
object with a `message` (what the original client shows), with CORS headers, never a crash
(`errors`). What one request may ask for is bounded before any work (`limits`), and the OpenAPI
document lists every status a route answers and every bound.
"""

from __future__ import annotations

import argparse
import gc
import logging
import re
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware

from neuron_explainer import demo
from neuron_explainer.activation_server import schemas as S
from neuron_explainer.activation_server.errors import (
    NotFound,
    ServiceUnavailable,
    error_responses,
    install_error_handlers,
    internal_error_answer,
)
from neuron_explainer.activation_server.explainer_routes import make_explainer_router
from neuron_explainer.activation_server.graph_routes import (
    load_server_transcoders,
    make_graph_router,
)
from neuron_explainer.activation_server.limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_SUB_REQUESTS,
    BodyLimitMiddleware,
    Limits,
    StrictJSONRoute,
    document_limits,
)
from neuron_explainer.activation_server.memory import release_freed_memory
from neuron_explainer.activation_server.processing import Debugger
from neuron_explainer.activation_server.read_routes import (
    load_record_from_datasets,
    make_read_router,
)
from neuron_explainer.activation_server.static import DEFAULT_DIST, mount_viewer
from neuron_explainer.activations.datasets import DatasetRegistry
from neuron_explainer.activations.records import normalized_activations
from neuron_explainer.explanations.llm import LLMClient, LLMConfig
from neuron_explainer.explanations.simulator import SIMULATOR_CHOICES, SimulatorChoice

if TYPE_CHECKING:
    from neuron_explainer.debugger.graph import Transcoders

log = logging.getLogger("neuron_explainer.activation_server")
T = TypeVar("T")

# Browsers on this machine only: http(s)://localhost or 127.0.0.1, any port.
LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1)(:\d+)?"


class ORJSONResponse(JSONResponse):
    """orjson is several times faster than the stdlib for the large node tables."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


# The statuses each kind of route answers besides 200 (413, any route: see create_app).
INFERENCE_ERRORS = error_responses(400, 422, 503)
MODEL_INFO_ERRORS = error_responses(503)


def create_app(
    debugger: Debugger | None,
    datasets: DatasetRegistry | None = None,
    llm: LLMClient | None = None,
    simulator: SimulatorChoice = "auto",
    explanation_set: str | None = None,
    limits: Limits | None = None,
    transcoders: Transcoders | None = None,
) -> FastAPI:
    """The app. `debugger` None is the no-model mode (schema, read and explainer routes only);
    `datasets` defaults to the published ones; `llm` None answers explanations from disk only;
    `limits` bound what one request may ask (see `limits.py`); `transcoders` (one per layer, or
    a cross-layer transcoder) are what /attribution_graph replaces the MLPs with."""
    limits = limits or Limits()
    app = FastAPI(
        title="Transformer Debugger activation server",
        generate_unique_id_function=S.operation_id,
        default_response_class=ORJSONResponse,
        responses=error_responses(413),  # the body limit applies to every route
    )
    app.router.route_class = StrictJSONRoute
    install_error_handlers(app, ORJSONResponse)

    async def catch_all(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            return await call_next(request)
        except Exception as exc:
            return internal_error_answer(ORJSONResponse, exc, request.url.path)

    # Innermost first: CORS headers go on every answer, the 413 and any 500 included.
    app.add_middleware(BaseHTTPMiddleware, dispatch=catch_all)
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_request_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origin_regex=LOCAL_ORIGINS,
        allow_methods=["*"],
        allow_headers=["*"],
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, routes=app.routes, openapi_version=app.openapi_version
            )
            app.openapi_schema = document_limits(document, limits)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    registry = datasets if datasets is not None else DatasetRegistry.with_published()
    if debugger is not None:
        debugger.max_prompt_tokens = limits.max_prompt_tokens
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

    async def compute_response(fn: Callable[[Debugger], Any]) -> Response:
        """`fn`'s answer, computed and rendered in a worker thread (see `_answer`)."""
        d = loaded()

        def locked() -> Response:
            with lock:
                try:
                    return _answer(lambda: fn(d))
                finally:
                    release_freed_memory()

        return await run_in_threadpool(locked)

    # ------------------------------------------------------------------ hello

    @app.get("/", tags=["hello_world"])
    async def read_root() -> dict[str, str]:
        return {"message": "Transformer Debugger activation server", "docs": "/docs"}

    @app.get("/force_client_code_generation", tags=["hello_world"], responses=error_responses(422))
    async def force_client_code_generation(group_id: S.GroupId) -> None:
        """Only here so the generated client includes GroupId."""
        return None

    # -------------------------------------------------------------- inference

    @app.post("/model_info", tags=["inference"], response_model=S.ModelInfoResponse, responses=MODEL_INFO_ERRORS)
    async def model_info() -> Any:
        # no model computation: answered at once, even while a long request holds the lock
        return loaded().model_info().model_dump(mode="json", by_alias=True)

    @app.post("/batched_tdb", tags=["inference"], response_model=S.BatchedResponse, responses=INFERENCE_ERRORS)
    async def batched_tdb(request: S.BatchedTdbRequest) -> Any:
        limits.check_sub_requests(len(request.sub_requests), "subRequests")
        return await compute_response(lambda d: _dump_batched(d.batched_tdb(request)))

    @app.post("/batched", tags=["inference"], response_model=S.BatchedResponse, responses=INFERENCE_ERRORS)
    async def batched(request: S.BatchedRequest) -> Any:
        limits.check_sub_requests(len(request.inference_sub_requests), "inferenceSubRequests")
        return await compute_response(lambda d: _dump_batched(d.batched(request)))

    @app.post("/derived_scalars", tags=["inference"], response_model=S.DerivedScalarsResponse, responses=INFERENCE_ERRORS)
    async def derived_scalars(request: S.DerivedScalarsRequest) -> Any:
        spec = request.derived_scalars_request_spec
        result = await compute(lambda d: _single(d, request.inference_request_spec, spec, "derived_scalars_response_data"))
        node = spec.normalize_activations_using_neuron_record
        if node is not None:
            data = result["derivedScalarsResponseData"]
            try:
                _, record = await run_in_threadpool(load_record_from_datasets, registry, node)
                data["normalizedActivations"] = normalized_activations(record, data["activations"])
            except (NotFound, ServiceUnavailable) as exc:
                # no record to normalise by: the raw activations are still useful
                log.info("not normalising activations: %s", exc)
        return await run_in_threadpool(_answer, lambda: result)

    @app.post("/derived_attention_scalars", tags=["inference"], response_model=S.DerivedAttentionScalarsResponse, responses=INFERENCE_ERRORS)
    async def derived_attention_scalars(request: S.DerivedAttentionScalarsRequest) -> Any:
        spec = request.derived_attention_scalars_request_spec
        return await compute_response(lambda d: _single(d, request.inference_request_spec, spec, "derived_attention_scalars_response_data"))

    @app.post("/multiple_top_k_derived_scalars", tags=["inference"], response_model=S.MultipleTopKDerivedScalarsResponse, responses=INFERENCE_ERRORS)
    async def multiple_top_k_derived_scalars(request: S.MultipleTopKDerivedScalarsRequest) -> Any:
        spec = request.multiple_top_k_derived_scalars_request_spec
        return await compute_response(lambda d: _single(d, request.inference_request_spec, spec, "multiple_top_k_derived_scalars_response_data"))

    # ------------------------------------------------------ read and explainer
    app.state.datasets = registry
    app.include_router(make_read_router(registry, served_model=debugger.model_name if debugger else None))
    app.include_router(make_explainer_router(llm, registry, simulator=simulator, explanation_set=explanation_set))
    app.include_router(make_graph_router(compute_response, transcoders))

    return app


def _answer(content: Callable[[], Any]) -> Response:
    """The JSON answer of `content()`, for a worker thread. Two things would otherwise stall the
    event loop (and /model_info) for seconds on a large answer (tens of MB of node tables):
    - FastAPI validating it again against the route's response model, in the event loop: a
      Response is returned as it is (the content comes from the pydantic models of `schemas`,
      so it matches the documented response model already);
    - Python's cyclic garbage collector scanning the millions of objects the answer is made of,
      holding the GIL: it is paused until they are freed (reference counting frees them)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return ORJSONResponse(content())
    finally:
        if paused:
            gc.enable()


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True)


def _dump_batched(response: S.BatchedResponse) -> Any:
    # one sub-response at a time: each dump holds the GIL, and /model_info waits for it
    return {"inferenceSubResponses": [_dump(sub) for sub in response.inference_sub_responses]}


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
    from neuron_explainer.models.loading import load_model, tokenizer_of

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
    from neuron_explainer.models.saes.attach import attach_coders

    attach_coders(model, args.sae, args.transcoders, device)
    return Debugger(model, tokenizer_of(model), args.model_name or args.model, names.get("mlp"), names.get("attention"))


def graph_transcoders(source: str | None, model: Any) -> Transcoders | None:
    """What /attribution_graph replaces the MLPs with: a per-layer set's transcoders as the
    debugger attached them (loaded once), or a cross-layer transcoder loaded for the graphs."""
    from neuron_explainer.debugger import scalars as sc

    attached = sorted((a for a in model.attachments() if a.latents.endswith(sc.TRANSCODER_LATENTS)), key=lambda a: int(a.latents.split(".")[1]))
    if source and attached:
        return [a.coder for a in attached]
    return load_server_transcoders(source, model)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Transformer Debugger activation server")
    p.add_argument("--model", default="demo",
                   help="registry name (demo: the bundled offline model; gpt2-small, ...), a Hugging Face repo id "
                   "(EleutherAI/pythia-70m, fetched once into the hub cache) or a model folder / URL")
    p.add_argument("--model-path", help="a local model folder (OpenAI, Hugging Face: GPT-2, GPT-NeoX/Pythia, Llama, Mistral, "
                   "Qwen2/3, Gemma 2; or our layout); overrides --model")
    p.add_argument("--model-name", help="name reported by /model_info (default: --model)")
    p.add_argument("--mlp-autoencoder", help="autoencoder set name (e.g. ae-mlp-post-act-v4) or folder "
                   "(default for the demo model: demo-ae-resid-delta-mlp)")
    p.add_argument("--attention-autoencoder", help="autoencoder set name (e.g. ae-resid-delta-attn-v4) or folder "
                   "(default for the demo model: demo-ae-resid-delta-attn)")
    p.add_argument("--no-autoencoders", action="store_true", help="do not attach the demo model's autoencoders")
    p.add_argument("--sae", action="append", default=[], metavar="SPEC",
                   help="a community SAE, repeatable: SAELens RELEASE:SAE_ID (gpt2-small-res-jb:blocks.8.hook_resid_pre), "
                   "hf://owner/repo/path, or a local folder (SAELens, Gemma Scope, Llama Scope layouts)")
    p.add_argument("--transcoders", metavar="SET",
                   help="a transcoder set or cross-layer transcoder (circuit-tracer's layouts): a folder or "
                   "hf://owner/repo; a set's latents are debugger nodes, and /attribution_graph replaces the MLPs with them")
    p.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-model", action="store_true", help="serve the schema and read routes only")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=FOLDER",
                   help="a local neuron-record folder (built by neuron_explainer.collate), repeatable; "
                   "name it after the model name the viewer's URLs use")
    p.add_argument("--llm-base-url", help="OpenAI-compatible endpoint for explanations (default: $OPENAI_BASE_URL)")
    p.add_argument("--explainer-model", help="model name at that endpoint")
    p.add_argument("--llm-api-key", help="API key (prefer the OPENAI_API_KEY environment variable)")
    p.add_argument("--llm-max-concurrent", type=int, default=8)
    p.add_argument("--simulator", default="auto", choices=SIMULATOR_CHOICES)
    p.add_argument("--explanation-set", help="name under which new explanations and scores are stored")
    p.add_argument("--no-llm-cache", action="store_true", help="do not cache LLM answers on disk")
    p.add_argument("--viewer-dist", type=Path, help="built neuron viewer (default: neuron_viewer/dist)")
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                   help="largest request body accepted, in bytes (default: %(default)s; larger: 413)")
    p.add_argument("--max-sub-requests", type=int, default=DEFAULT_MAX_SUB_REQUESTS,
                   help=f"sub-requests (prompts) per request, at most {S.MAX_SUB_REQUESTS} (default: %(default)s)")
    p.add_argument("--max-prompt-tokens", type=int,
                   help="tokens per prompt (default: the model's context window)")
    return p.parse_args(argv)


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(
        max_request_bytes=args.max_request_bytes,
        max_sub_requests=args.max_sub_requests,
        max_prompt_tokens=args.max_prompt_tokens,
    )


def apply_demo_defaults(args: argparse.Namespace) -> None:
    """The bundled model comes with its autoencoders and neuron records: serve them unless the
    command line says otherwise."""
    if args.model != demo.NAME or args.model_path or args.no_autoencoders:
        return
    from neuron_explainer.models.autoencoder import AUTOENCODERS

    if args.mlp_autoencoder is None and demo.MLP_AUTOENCODER_NAME in AUTOENCODERS:
        args.mlp_autoencoder = demo.MLP_AUTOENCODER_NAME
    if args.attention_autoencoder is None and demo.ATTN_AUTOENCODER_NAME in AUTOENCODERS:
        args.attention_autoencoder = demo.ATTN_AUTOENCODER_NAME
    if not args.sae:  # its residual-stream SAEs, one per layer
        args.sae = [str(p) for p in sorted(demo.RESID_SAES_DIR.glob("blocks.*.hook_resid_post"))]
    if args.transcoders is None and (demo.TRANSCODERS_DIR / "config.yaml").is_file():
        args.transcoders = str(demo.TRANSCODERS_DIR)
    if not any(d.startswith(demo.NAME + "=") for d in args.dataset):
        args.dataset += [f"{demo.NAME}={folder}" for folder in demo.DATASET_DIRS if folder.is_dir()]


def build_registry(args: argparse.Namespace) -> DatasetRegistry:
    """The published datasets and those of --dataset (ValueError names a bad folder)."""
    registry = DatasetRegistry.with_published()
    for item in args.dataset:
        name, _, folder = item.partition("=")
        registry.register_local_dataset(name, folder)
    return registry


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        limits = limits_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    apply_demo_defaults(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    debugger = None
    transcoders = None
    if not args.no_model:
        try:
            debugger = build_debugger(args)
        except (ValueError, RuntimeError, OSError) as exc:
            # one line saying what is wrong and what to do (the loaders' errors already do)
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        try:
            transcoders = graph_transcoders(args.transcoders, debugger.model)
        except (ValueError, RuntimeError, OSError) as exc:
            print(f"error: --transcoders: {exc}", file=sys.stderr)
            sys.exit(2)
    try:
        registry = build_registry(args)
    except ValueError as exc:
        print(f"error: --dataset: {exc}", file=sys.stderr)
        sys.exit(2)
    cfg = LLMConfig.resolve(
        base_url=args.llm_base_url, model=args.explainer_model, api_key=args.llm_api_key,
        cache=not args.no_llm_cache, max_concurrent=args.llm_max_concurrent,
    )
    llm = LLMClient(cfg) if cfg else None
    log.info("explanations: %s", llm.describe() if llm else "no LLM endpoint (stored explanations only)")
    app = create_app(debugger, registry, llm, args.simulator, args.explanation_set, limits, transcoders)
    mount_viewer(app, args.viewer_dist or DEFAULT_DIST)
    # what start-up built (weights, vocabulary) is never garbage: the collector skips it
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
