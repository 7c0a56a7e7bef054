"""One batched forward (+ backward) pass that records what the debugger needs.

A request for one prompt says: which activations to zero or overwrite (`Ablation`), what to
differentiate (`LogitDiffLoss`, or `Trace` of one node), and which activations and gradients to
keep. All prompts of a request run as one batch: rows never interact (attention is per row and
each row's objective depends only on its own logits), so one `backward()` of the summed
objectives gives every row exactly its own gradients.

Indices here use the per-prompt layouts of the API (`Recording` documents them); the only place
that knows the model's batched layouts is `_model_index`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor

from neuron_explainer.debugger.scalar_cache import ScalarCache
from neuron_explainer.models.transformer import MODEL_LOCATIONS, Transformer, hook_name

# An index into one prompt's activation tensor; None means "all positions along this axis".
Index = tuple[int | None, ...]
Pass = Literal["forward", "backward"]

# Locations whose per-prompt layout differs from the model's batched one.
_PAIR_LOCATIONS = ("attn.qk_logits", "attn.qk_probs")  # model (b, h, q, k) -> API (q, k, h)
# Locations after the last block (the final norm, the logits).
_FINAL_LOCATIONS = {loc for loc in MODEL_LOCATIONS if loc != "resid.post_emb"}


@dataclass(frozen=True)
class Site:
    """One activation tensor of the model: a hook location at a layer (None for layerless)."""

    location: str
    layer: int | None = None

    @property
    def hook(self) -> str:
        return hook_name(self.location, self.layer)


@dataclass(frozen=True)
class Ablation:
    """Overwrite an activation (forward) or the gradient flowing into it (backward) at `index`."""

    site: Site
    index: Index
    value: float = 0.0
    pass_type: Pass = "forward"


@dataclass(frozen=True)
class LogitDiffLoss:
    """mean(logits of targets) - mean(logits of distractors) at the last token; with no
    distractors and subtract_mean, the mean logit over the vocabulary is subtracted instead.
    `probs` sums the target probabilities instead. `zero` differentiates nothing (useful with
    backward ablations that inject a gradient)."""

    targets: tuple[int, ...] = ()
    distractors: tuple[int, ...] = ()
    kind: Literal["logit_diff", "logit_minus_mean", "probs", "zero"] = "logit_diff"


@dataclass(frozen=True)
class Trace:
    """Differentiate one node instead of the loss.

    `site`/`index` name the pre-activation to differentiate (for attention: the QK logit at
    (query, key, head)). With `readout`, the quantity is `readout` of the activation vector at
    `site` at token `index[0]` instead (a latent's pre-activation: its encoder row applied to
    the autoencoder's input). `through` restricts an attention node to its query side ("Q"), key
    side ("K") or both ("QK"). "V" differentiates the head's direct effect at that token pair:
    its write, with the attention weight held fixed, projected on the gradient of `downstream`
    (another Trace) or, without one, of the loss, taken at the residual stream site `onto` just
    before the downstream node (or the final one, for the loss). Holding norm scales constant is
    the caller's (backward ablations of their scale sites).
    """

    site: Site
    index: Index
    through: Literal["Q", "K", "QK", "V"] | None = None
    downstream: Trace | None = None
    readout: Callable[[Tensor], Tensor] | None = None
    onto: Site | None = None


@dataclass
class PromptRequest:
    tokens: list[int]
    ablations: Sequence[Ablation] = ()
    loss: LogitDiffLoss | None = None
    trace: Trace | None = None


class Activations(dict[Site, Tensor]):
    """A recording's activations by site, of which some are computed only when first read
    (`defer`): the logits at every position, which a request often reads at one token."""

    def __init__(self) -> None:
        super().__init__()
        self._later: dict[Site, Callable[[], Tensor]] = {}

    def defer(self, site: Site, make: Callable[[], Tensor]) -> None:
        self._later[site] = make

    def is_deferred(self, site: Site) -> bool:
        """Whether `site` is recorded but not computed yet."""
        return site in self._later

    def __missing__(self, site: Site) -> Tensor:
        make = self._later.pop(site, None)
        if make is None:
            raise KeyError(site)
        self[site] = x = make()
        return x

    def __contains__(self, site: object) -> bool:
        return dict.__contains__(self, site) or site in self._later

    def get(self, site: Site, default: Any = None) -> Any:
        return self[site] if site in self else default  # noqa: SIM401 (dict.get would skip __missing__)


@dataclass
class Recording:
    """What one prompt's pass recorded. Per-prompt layouts (T = prompt length):
    resid.* (T, d_model); mlp.* (T, d_mlp); attn.qk_probs / qk_logits (T_query, T_key, heads);
    attn.q (T, heads, d_head); attn.k/v (T, kv_heads, d_head); *_ln.scale (T, 1); latents
    (T, n_latents); logits (T, vocab)."""

    tokens: list[int]
    activations: Activations = field(default_factory=Activations)
    gradients: dict[Site, Tensor] = field(default_factory=dict)
    objective: float | None = None  # what was differentiated: the traced quantity, else the loss
    loss: float | None = None  # the loss, when the request has one (also while tracing)
    traced_value: float | None = None  # the traced quantity, when tracing
    derived: ScalarCache = field(default_factory=ScalarCache)  # the derived scalars computed on it
    context: Any = None  # what the derived scalars need to know of the request (their caller's)
    # the last block's residual stream (T, d_model) where the logits are deferred: what computes
    # them at any token alone (`Transformer.logits_of`), or their sums over the vocabulary
    final_resid: Tensor | None = None


def _model_index(site: Site, row: int, index: Index) -> tuple[int | slice, ...]:
    """Per-prompt API index -> index into the model's batched tensor."""
    idx = tuple(slice(None) if i is None else i for i in index)
    if site.location in _PAIR_LOCATIONS:
        q, k, h = (idx + (slice(None),) * 3)[:3]
        return (row, h, q, k)
    return (row, *idx)


def _to_prompt_layout(site: Site, x: Tensor, length: int) -> Tensor:
    """Batched row (no batch dim) -> per-prompt layout, cutting right padding."""
    if site.location in _PAIR_LOCATIONS:
        return x[:, :length, :length].permute(1, 2, 0)
    return x[:length]


def run(
    model: Transformer,
    requests: Sequence[PromptRequest],
    record: Sequence[Site] = (),
    record_grads: Sequence[Site] = (),
) -> list[Recording]:
    """Run all prompts as one batch; record `record` activations and `record_grads` gradients."""
    device = model.device
    lengths = [len(r.tokens) for r in requests]
    longest = max(lengths)
    tokens = torch.tensor([r.tokens + [0] * (longest - len(r.tokens)) for r in requests], device=device)
    pad = None
    if min(lengths) != longest:
        pad = torch.tensor([[i >= n for i in range(longest)] for n in lengths], device=device)
    needs_grad = any(
        r.trace is not None
        or (r.loss is not None and r.loss.kind != "zero")
        or any(a.pass_type == "backward" for a in r.ablations)
        for r in requests
    )

    fwd: dict[str, list[Callable[[Tensor], Tensor | None]]] = {}
    bwd: dict[str, list[Callable[[Tensor], Tensor | None]]] = {}
    kept: dict[Site, Tensor] = {}  # batched activations, still in the graph
    grads: dict[Site, Tensor] = {}
    recording_grads = [False]  # backward hooks record only during the final backward pass

    # Ablations first, so recordings and traces see the ablated values and gradients.
    for row, r in enumerate(requests):
        for a in r.ablations:
            table = fwd if a.pass_type == "forward" else bwd
            table.setdefault(a.site.hook, []).append(_overwrite(_model_index(a.site, row, a.index), a.value))
    # Traces through Q (or K) must not see gradient through the other side.
    for row, r in enumerate(requests):
        if r.trace is not None and r.trace.through in ("Q", "K"):
            blocked = "attn.k" if r.trace.through == "Q" else "attn.q"
            fwd.setdefault(hook_name(blocked, r.trace.site.layer), []).append(_detach_row(row))
    for site in {*record, *record_grads, *_trace_sites(model, requests)}:
        fwd.setdefault(site.hook, []).append(_keep(kept, site))
    for site in record_grads:
        bwd.setdefault(site.hook, []).append(_keep_grad(grads, site, recording_grads))

    if needs_grad:
        # Weights may be frozen (the server freezes them: it only wants activation gradients),
        # so make the first activation a leaf that requires grad.
        fwd.setdefault("resid.post_emb", []).insert(0, _require_grad)
    # The loss reads the last token's logits only: unless something traces, ablates or records
    # the final norm or the logits elsewhere, unembed that token alone (the unembedding is the
    # largest matmul of a short prompt, forward and backward). Logits that are only recorded
    # are computed afterwards outside the graph, from the last block's residual stream: the
    # unembedding's backward at every position, and the gradient of every logit, cost a
    # 64-token request on GPT-2 small a third of its bare pass.
    traced_final = {s.location for s in (*record_grads, *_trace_sites(model, requests))} & _FINAL_LOCATIONS
    recorded_final = {s.location for s in record} & _FINAL_LOCATIONS
    # a backward ablation of every token leaves the last token's gradient as it would be
    ablated_final = any(
        a.site.location in _FINAL_LOCATIONS and (a.pass_type == "forward" or any(i is not None for i in a.index[:1]))
        for r in requests
        for a in r.ablations
    )
    logits_after = recorded_final == {"logits"} and not traced_final and not ablated_final
    last_only = logits_after or not (traced_final or recorded_final or ablated_final)
    logit_positions = torch.tensor([[n - 1] for n in lengths], device=device) if last_only else None
    resid_out = Site("resid.post_mlp", model.cfg.n_layers - 1)
    if logits_after:
        fwd.setdefault(resid_out.hook, []).append(_keep(kept, resid_out))
    with torch.set_grad_enabled(needs_grad), model.hooks(fwd=fwd, bwd=bwd):
        logits = model(tokens, pad=pad, logit_positions=logit_positions)
        losses = [
            _loss(r.loss, logits[row, 0 if last_only else lengths[row] - 1]) for row, r in enumerate(requests)
        ]
        traced = [
            None if r.trace is None else _traced(model, r.trace, row, losses[row], kept)
            for row, r in enumerate(requests)
        ]
        objectives = [losses[row] if r.trace is None else traced[row] for row, r in enumerate(requests)]
        for row, r in enumerate(requests):
            if objectives[row] is None and any(a.pass_type == "backward" for a in r.ablations):
                # nothing to differentiate, but a backward ablation injects a gradient: give the
                # backward pass a (zero) start so that it reaches the injection point
                objectives[row] = logits[row].sum() * 0.0
        if needs_grad:
            total = sum((o for o in objectives if o is not None), start=torch.zeros((), device=device))
            # Backward ablations inject gradients even where the objective is zero.
            recording_grads[0] = True
            if total.requires_grad:
                total.backward()

    out = []
    for row, r in enumerate(requests):
        rec = Recording(tokens=list(r.tokens))
        for site in record:
            if logits_after and site.location == "logits":
                # from the last block's residual stream when first read, as a whole; a reader
                # that needs one token's (or their sums) takes them from `final_resid` instead
                resid = rec.final_resid = kept[resid_out][row, : lengths[row]].detach()
                rec.activations.defer(site, partial(model.logits_of, resid))
                continue
            rec.activations[site] = _to_prompt_layout(site, kept[site][row].detach(), lengths[row])
        for site in record_grads:
            g = grads.get(site)
            full = torch.zeros_like(kept[site][row]) if g is None else g[row]
            rec.gradients[site] = _to_prompt_layout(site, full.detach(), lengths[row])
        rec.derived.share([*rec.activations.values(), *rec.gradients.values()])
        rec.objective, rec.loss, rec.traced_value = (
            None if x is None else float(x.detach()) for x in (objectives[row], losses[row], traced[row])
        )
        out.append(rec)
    return out


def _require_grad(x: Tensor) -> Tensor:
    return x if x.requires_grad else x.detach().requires_grad_(True)


def _traced(model: Transformer, trace: Trace, row: int, loss: Tensor | None, kept: dict[Site, Tensor]) -> Tensor | None:
    if trace.through != "V":
        return _node_value(trace, row, kept)
    # Through V: the head's direct effect at (q, k, h): its write, with the attention weight held
    # fixed, projected on the gradient of what is downstream at the residual stream just before
    # it (the write joins that stream directly).
    q, k, h = (int(i) for i in trace.index)  # type: ignore[arg-type]
    layer = trace.site.layer
    assert layer is not None and trace.onto is not None, "a trace through V needs its site `onto`"
    downstream = _node_value(trace.downstream, row, kept) if trace.downstream is not None else loss
    if downstream is None or not downstream.requires_grad:
        return None
    (g,) = torch.autograd.grad(downstream, kept[trace.onto], retain_graph=True, allow_unused=True)
    if g is None:  # the downstream quantity does not read that residual stream
        return None
    v = kept[Site("attn.v", layer)][row, k, model.kv_head(h)]
    p = kept[Site("attn.qk_probs", layer)][row, h, q, k].detach()
    write = p * (v @ model.head_write(layer)[h])
    scale = model.write_scale_location("attn")
    if scale is not None:  # through the post-attention norm, its scale held constant
        write = write / kept[Site(scale, layer)][row, q].detach()
    return write @ g[row, q].detach()


def _node_value(trace: Trace, row: int, kept: dict[Site, Tensor]) -> Tensor:
    if trace.readout is not None:
        token = trace.index[0]
        assert token is not None, "a traced readout needs its token"
        return trace.readout(kept[trace.site][row, token])
    return kept[trace.site][_model_index(trace.site, row, trace.index)].sum()


def _loss(loss: LogitDiffLoss | None, last_logits: Tensor) -> Tensor | None:
    if loss is None or loss.kind == "zero":
        return None
    logits = last_logits.float()
    if loss.kind == "probs":
        return logits.softmax(-1)[list(loss.targets)].sum()
    value = logits[list(loss.targets)].mean()
    if loss.distractors:
        value = value - logits[list(loss.distractors)].mean()
    elif loss.kind == "logit_minus_mean":
        value = value - logits.mean()
    return value


def _trace_sites(model: Transformer, requests: Sequence[PromptRequest]) -> set[Site]:
    sites: set[Site] = set()
    scale = model.write_scale_location("attn")
    for r in requests:
        t = r.trace
        while t is not None:
            sites.add(t.site)
            if t.through == "V":
                layer = t.site.layer
                sites |= {Site("attn.v", layer), Site("attn.qk_probs", layer)}
                if t.onto is not None:
                    sites.add(t.onto)
                if scale is not None:
                    sites.add(Site(scale, layer))
            t = t.downstream
    return sites


def _overwrite(index: tuple[int | slice, ...], value: float) -> Callable[[Tensor], Tensor]:
    def fn(x: Tensor) -> Tensor:
        x = x.clone()
        x[index] = value
        return x

    return fn


def _detach_row(row: int) -> Callable[[Tensor], Tensor]:
    def fn(x: Tensor) -> Tensor:
        mask = torch.zeros(x.shape[0], *([1] * (x.ndim - 1)), dtype=torch.bool, device=x.device)
        mask[row] = True
        return torch.where(mask, x.detach(), x)

    return fn


def _keep(store: dict[Site, Tensor], site: Site) -> Callable[[Tensor], None]:
    def fn(x: Tensor) -> None:
        store[site] = x

    return fn


def _keep_grad(store: dict[Site, Tensor], site: Site, active: list[bool]) -> Callable[[Tensor], None]:
    def fn(g: Tensor) -> None:
        if active[0]:
            store[site] = g

    return fn
