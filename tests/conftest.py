"""Shared pytest fixtures."""

from __future__ import annotations

import collections
import functools
import http.server
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# --- http_server: a real local HTTP server -----------------------------------------------
# Tests that exercise downloads use a real server on 127.0.0.1 rather than mocking httpx, so
# that streaming, Content-Length, redirects and connection errors behave like the real thing,
# all offline.

RouteHandler = Callable[[http.server.BaseHTTPRequestHandler], None]


class LocalHTTPServer:
    """Serves the files under `root` over HTTP on 127.0.0.1 and counts requests per path.

    - `url_for("a/b.json")` -> "http://127.0.0.1:<port>/a/b.json"
    - `root`: the folder served; write files there (in the published layouts) before fetching.
    - `requests`: Counter keyed by the relative path requested (e.g. "a/b.json"), GET and
      HEAD alike; `request_log` has (method, relative path) in order.
    - `add_route(path, handler)`: answer `path` with a custom function instead of a file, e.g.
      to simulate errors or a connection that drops mid-body.
    - `add_prefix_route(prefix, handler)`: the same for every path starting with `prefix` (the
      longest matching prefix wins; exact routes first), e.g. to speak an API.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: collections.Counter[str] = collections.Counter()
        self.request_log: list[tuple[str, str]] = []
        self.routes: dict[str, RouteHandler] = {}
        self.prefix_routes: dict[str, RouteHandler] = {}
        self._lock = threading.Lock()
        handler = functools.partial(_RequestHandler, directory=str(root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.owner = self  # type: ignore[attr-defined]  # read by _RequestHandler.
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url_for(self, relative_path: str) -> str:
        """URL under which `root / relative_path` is served."""
        relative_path = relative_path.replace("\\", "/").lstrip("/")
        return f"{self.base_url}/{urllib.parse.quote(relative_path)}"

    def add_route(self, relative_path: str, handler: RouteHandler) -> None:
        """Answer requests for `relative_path` with `handler(request_handler)` instead of a file."""
        self.routes[relative_path.lstrip("/")] = handler

    def add_prefix_route(self, prefix: str, handler: RouteHandler) -> None:
        """Answer every request whose path starts with `prefix` with `handler`."""
        self.prefix_routes[prefix.lstrip("/")] = handler

    def route_for(self, key: str) -> RouteHandler | None:
        if key in self.routes:
            return self.routes[key]
        matches = [p for p in self.prefix_routes if key.startswith(p)]
        return self.prefix_routes[max(matches, key=len)] if matches else None

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def _record(self, method: str, key: str) -> None:
        with self._lock:
            self.requests[key] += 1
            self.request_log.append((method, key))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _RequestHandler(http.server.SimpleHTTPRequestHandler):
    def _dispatch(self, method: str, default: Callable[[], None]) -> None:
        owner: LocalHTTPServer = self.server.owner  # type: ignore[attr-defined]
        key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        owner._record(method, key)
        route = owner.route_for(key)
        if route is not None:
            route(self)
        else:
            default()

    def do_GET(self) -> None:
        self._dispatch("GET", super().do_GET)

    def do_HEAD(self) -> None:
        self._dispatch("HEAD", super().do_HEAD)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # Keep test output clean.


@pytest.fixture
def http_server(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalHTTPServer]:
    """A real HTTP server on 127.0.0.1 serving a fresh temporary folder (`.root`)."""
    # A proxy configured in the environment must not intercept requests to the local server.
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    server = LocalHTTPServer(tmp_path_factory.mktemp("http_root"))
    try:
        yield server
    finally:
        server.close()


# --- tiny debugger models for the activation server tests ---------------------------------
# Two layers, d_model 64, GPT-2's vocabulary (so the real tokenizer works) and a 64-token context.
# `debugger_plain` has no autoencoders; `debugger_with_autoencoders` has random small MLP
# (mlp.post_act) and attention (resid.delta_attn) autoencoders attached, so that the latent code
# paths run. Both are module-scoped (cheap: well under a second each) and never mutated by tests.

TINY_CTX_WINDOW = 64
TINY_AE_LATENTS = 32


def _tiny_server_model(seed: int = 0) -> Any:
    import torch

    from neuron_explainer.models.transformer import Transformer, TransformerConfig

    torch.set_num_threads(1)
    cfg = TransformerConfig(
        n_layers=2, d_model=64, n_heads=4, n_vocab=50257, ctx_window=TINY_CTX_WINDOW
    )
    model = Transformer(cfg).init_weights(seed)
    for p in model.parameters():
        p.requires_grad_(False)  # as the server does: gradients of activations only
    return model


def random_autoencoder(n_latents: int, n_inputs: int, seed: int) -> Any:
    """A random ReLU autoencoder with small nonzero biases, weights frozen."""
    import torch

    from neuron_explainer.models.autoencoder import SparseAutoencoder

    ae = SparseAutoencoder(n_latents, n_inputs)
    ae.reset_parameters(seed=seed)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed + 1)
        ae.pre_bias.copy_(torch.randn(n_inputs, generator=gen) * 0.01)
        ae.latent_bias.copy_(torch.randn(n_latents, generator=gen).abs() * 0.01)
    return ae.requires_grad_(False)


def random_coder(d: int, n: int, hook_in: str, hook_out: str | None, seed: int) -> Any:
    """A random ReLU sparse coder in the community's layout (a transcoder when `hook_out` is
    given), reading TransformerLens hook `hook_in`; decoder rows about as long as activations."""
    import torch

    from neuron_explainer.models.saes import SparseCoder, SparseCoderInfo

    info = SparseCoderInfo(format="test", source=f"random {hook_in}", architecture="relu", hook_in=hook_in, hook_out=hook_out)
    coder = SparseCoder(d, n, transcoder=hook_out is not None, info=info)
    gen = torch.Generator().manual_seed(seed)
    weights = {k: torch.randn(p.shape, generator=gen) * (0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.05)
               for k, p in coder.named_parameters()}
    coder.load_weights(weights, source="random")
    return coder.requires_grad_(False)


def _tiny_debugger(with_autoencoders: bool) -> Any:
    from neuron_explainer.activation_server.processing import Debugger
    from neuron_explainer.models.autoencoder import AutoencoderSpec, attach
    from neuron_explainer.models.tokenizer import get_tokenizer

    model = _tiny_server_model()
    mlp_name = attn_name = None
    if with_autoencoders:
        n = model.cfg.n_layers
        for kind, reads, width, seed in (
            ("mlp", "mlp.post_act", model.cfg.d_mlp, 10),
            ("attention", "resid.delta_attn", model.cfg.d_model, 20),
        ):
            spec = AutoencoderSpec(reads=reads, kind=kind, location="unused", n_layers=n)  # type: ignore[arg-type]
            attach(
                model,
                spec,
                [random_autoencoder(TINY_AE_LATENTS, width, seed + i) for i in range(n)],
            )
        mlp_name, attn_name = "tiny-ae-mlp", "tiny-ae-attn"
    return Debugger(model, get_tokenizer(), "tiny-2l", mlp_name, attn_name)


@pytest.fixture(scope="module")
def debugger_plain() -> Any:
    """A `processing.Debugger` over a tiny random 2-layer model, no autoencoders."""
    return _tiny_debugger(with_autoencoders=False)


@pytest.fixture(scope="module")
def debugger_with_autoencoders() -> Any:
    """A `processing.Debugger` over a tiny random 2-layer model with MLP and attention
    autoencoders (32 latents each) attached."""
    return _tiny_debugger(with_autoencoders=True)


def random_family_model_with_autoencoders(
    family: str, folder: Any, mlp_reads: str, n_latents: int, seed: int
) -> tuple[Any, Any]:
    """(our model, the transformers model holding its weights): a random checkpoint of `family`
    saved in the Hugging Face layout and loaded by us, with a random MLP autoencoder reading
    `mlp_reads` and an attention one reading resid.delta_attn on every layer."""
    from neuron_explainer.models.autoencoder import AutoencoderSpec, attach
    from neuron_explainer.models.loading import load_model
    from neuron_explainer.models.random_models import save_random

    saved, hf = save_random(family, folder)
    model = load_model(saved)
    model.requires_grad_(False)
    n = model.cfg.n_layers
    for kind, reads, width, first_seed in (
        ("mlp", mlp_reads, model.cfg.d_mlp if mlp_reads == "mlp.post_act" else model.cfg.d_model, seed),
        ("attention", "resid.delta_attn", model.cfg.d_model, seed + 10),
    ):
        spec = AutoencoderSpec(reads=reads, kind=kind, location="unused", n_layers=n)  # type: ignore[arg-type]
        attach(model, spec, [random_autoencoder(n_latents, width, first_seed + i) for i in range(n)])
    return model, hf
