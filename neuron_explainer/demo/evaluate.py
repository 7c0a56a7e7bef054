"""Measure the demo model: held-out loss vs a bigram model, IOI, induction.

    python -m neuron_explainer.demo.evaluate --model neuron_explainer/demo/model [--json OUT]

- Held-out loss: mean next-token loss (nats/token) on `corpus/heldout/*.txt` (non-overlapping
  windows of the model's context), against interpolated Kneser-Ney bigram and unigram models
  fitted on the training text (`corpus/*.txt`) with the same tokenizer.
- IOI: on prompts from the HELDOUT templates (never generated for training), the fraction whose
  logit for the indirect object beats the subject's, and the mean logit difference.
- Induction: random token sequences repeated once; mean loss on the second copy vs the first
  (each copy's first token excluded: it cannot be predicted).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F
from torch import Tensor

from neuron_explainer.demo import data
from neuron_explainer.models.tokenizer import ENDOFTEXT

LogitsFn = Callable[[Tensor], Tensor]  # (b, s) tokens -> (b, s, vocab) logits


def eot_id(enc: tiktoken.Encoding) -> int:
    return enc.encode_single_token(ENDOFTEXT)


# ------------------------------------------------------------------------------- IOI


def ioi_batch(
    enc: tiktoken.Encoding, prompts: Sequence[data.IOIPrompt]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(tokens right-padded, last position, IO id, S id); each prompt starts with <|endoftext|>."""
    eot = eot_id(enc)
    seqs = [[eot, *enc.encode_ordinary(p.text)] for p in prompts]
    width = max(map(len, seqs))
    tokens = torch.tensor([s + [eot] * (width - len(s)) for s in seqs])
    last = torch.tensor([len(s) - 1 for s in seqs])
    io = torch.tensor([enc.encode_single_token(p.io) for p in prompts])
    s = torch.tensor([enc.encode_single_token(p.s) for p in prompts])
    return tokens, last, io, s


@torch.no_grad()
def ioi_logit_diffs(
    logits_fn: LogitsFn, enc: tiktoken.Encoding, prompts: Sequence[data.IOIPrompt]
) -> Tensor:
    """logit(IO) - logit(S) at the last position of each prompt (causal model: right padding
    does not change earlier positions)."""
    tokens, last, io, s = ioi_batch(enc, prompts)
    out = []
    for i in range(0, len(prompts), 64):
        sl = slice(i, i + 64)
        logits = logits_fn(tokens[sl]).float()
        final = logits[torch.arange(logits.shape[0]), last[sl]]
        out.append(final.gather(1, io[sl, None])[:, 0] - final.gather(1, s[sl, None])[:, 0])
    return torch.cat(out)


def ioi_eval(
    logits_fn: LogitsFn, enc: tiktoken.Encoding, n: int = 256, heldout: bool = True, seed: int = 1
) -> dict[str, Any]:
    names = data.single_token_names(enc)
    prompts = data.ioi_prompts(n, names, heldout=heldout, seed=seed)
    diffs = ioi_logit_diffs(logits_fn, enc, prompts)
    per_template: dict[str, list[float]] = {}
    for p, d in zip(prompts, diffs.tolist(), strict=True):
        per_template.setdefault(f"{p.template[0]}-{p.template[1]}", []).append(d)
    return {
        "n_prompts": n,
        "templates": "heldout" if heldout else "train",
        "accuracy": float((diffs > 0).float().mean()),
        "mean_logit_diff": float(diffs.mean()),
        "per_template_accuracy": {
            k: float(np.mean(np.array(v) > 0)) for k, v in sorted(per_template.items())
        },
    }


# ------------------------------------------------------------------------- induction


@torch.no_grad()
def induction_eval(
    logits_fn: LogitsFn, vocab: int, eot: int, n: int = 64, length: int = 40, seed: int = 2
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    rows = torch.from_numpy(data.repeated_random_tokens(rng, n, length, vocab - 1, bos=eot))
    logits = logits_fn(rows).float()
    losses = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1), reduction="none"
    ).view(n, -1)
    # position p of `losses` predicts rows[:, p + 1]; first copy = rows[1 : 1 + L],
    # second = rows[1 + L : 1 + 2L]; skip each copy's first token.
    first = losses[:, 1:length].mean()
    second = losses[:, length + 1 : 2 * length].mean()
    return {
        "first_copy_loss": float(first),
        "second_copy_loss": float(second),
        "improvement": float(first - second),
        "n_sequences": n,
        "length": length,
    }


# --------------------------------------------------------------------------- held-out loss


@torch.no_grad()
def lm_loss(
    logits_fn: LogitsFn,
    tokens: np.ndarray,
    ctx: int,
    max_windows: int | None = None,
    batch: int = 16,
) -> float:
    """Mean next-token loss over non-overlapping windows of ctx+1 tokens."""
    n_win = (len(tokens) - 1) // ctx
    if max_windows is not None:
        n_win = min(n_win, max_windows)
    windows = np.stack([tokens[i * ctx : i * ctx + ctx + 1] for i in range(n_win)])
    total, count = 0.0, 0
    for i in range(0, n_win, batch):
        w = torch.from_numpy(windows[i : i + batch].astype(np.int64))
        logits = logits_fn(w[:, :-1]).float()
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += w[:, 1:].numel()
    return total / count


def bigram_losses(
    train: Sequence[np.ndarray], test: Sequence[np.ndarray], vocab: int, discount: float = 0.75
) -> dict[str, float]:
    """Unigram (add-one) and interpolated Kneser-Ney bigram loss (nats/token) on `test`,
    fitted on `train` token arrays (each array one document; no bigram across documents)."""
    counts = np.zeros((vocab, vocab), dtype=np.float64)
    uni = np.zeros(vocab)
    for t in train:
        np.add.at(counts, (t[:-1], t[1:]), 1)
        uni += np.bincount(t, minlength=vocab)
    p_uni = (uni + 1) / (uni.sum() + vocab)
    # continuation probability: how many distinct left contexts each token follows
    cont = (counts > 0).sum(0).astype(np.float64)
    p_cont = (cont + 1e-3) / (cont + 1e-3).sum()
    row_tot = counts.sum(1)
    row_types = (counts > 0).sum(1)
    total_uni, total_kn, n = 0.0, 0.0, 0
    for t in test:
        a, b = t[:-1], t[1:]
        c = counts[a, b]
        tot = row_tot[a]
        lam = np.where(tot > 0, discount * row_types[a] / np.maximum(tot, 1), 1.0)
        p = (
            np.where(tot > 0, np.maximum(c - discount, 0) / np.maximum(tot, 1), 0.0)
            + lam * p_cont[b]
        )
        total_kn += float(-np.log(p).sum())
        total_uni += float(-np.log(p_uni[b]).sum())
        n += len(b)
    return {"unigram_loss": total_uni / n, "kneser_ney_bigram_loss": total_kn / n}


# ------------------------------------------------------------------------------ main


def evaluate(
    model: Any,
    enc: tiktoken.Encoding,
    corpus_dir: str | Path,
    *,
    n_ioi: int = 256,
    max_windows: int | None = None,
) -> dict[str, Any]:
    model.eval()
    fn: LogitsFn = lambda tokens: model(tokens)  # noqa: E731
    eot = eot_id(enc)
    t0 = time.time()
    heldout = [
        np.array(x, dtype=np.int64)
        for x in enc.encode_ordinary_batch(data.read_heldout(corpus_dir))
    ]
    train = [
        np.array(x, dtype=np.int64) for x in enc.encode_ordinary_batch(data.read_corpus(corpus_dir))
    ]
    ctx = model.cfg.ctx_window
    losses = [lm_loss(fn, h, ctx, max_windows) for h in heldout]
    sizes = [min((len(h) - 1) // ctx, max_windows or 10**9) * ctx for h in heldout]
    model_loss = float(np.average(losses, weights=sizes))
    bigram = bigram_losses(train, heldout, enc.n_vocab)
    return {
        "heldout": {
            "model_loss": model_loss,
            **bigram,
            "n_tokens": int(sum(sizes)),
            "files": [p.name for p in data.heldout_files(corpus_dir)],
        },
        "ioi_heldout_templates": ioi_eval(fn, enc, n_ioi, heldout=True),
        "ioi_train_templates": ioi_eval(fn, enc, n_ioi, heldout=False),
        "induction": induction_eval(fn, enc.n_vocab, eot),
        "eval_seconds": time.time() - t0,
    }


def format_table(r: dict[str, Any]) -> str:
    h, io, iot, ind = (
        r["heldout"],
        r["ioi_heldout_templates"],
        r["ioi_train_templates"],
        r["induction"],
    )
    rows = [
        ("held-out loss (nats/token), model", f"{h['model_loss']:.3f}"),
        ("held-out loss, Kneser-Ney bigram (train text)", f"{h['kneser_ney_bigram_loss']:.3f}"),
        ("held-out loss, unigram (train text)", f"{h['unigram_loss']:.3f}"),
        (f"IOI accuracy, held-out templates (n={io['n_prompts']})", f"{io['accuracy']:.1%}"),
        ("IOI mean logit diff, held-out templates", f"{io['mean_logit_diff']:.2f}"),
        (f"IOI accuracy, training templates (n={iot['n_prompts']})", f"{iot['accuracy']:.1%}"),
        ("IOI mean logit diff, training templates", f"{iot['mean_logit_diff']:.2f}"),
        ("induction loss, first copy", f"{ind['first_copy_loss']:.3f}"),
        ("induction loss, second copy", f"{ind['second_copy_loss']:.3f}"),
        ("induction improvement (nats)", f"{ind['improvement']:.3f}"),
    ]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


def model_card(
    results: dict[str, Any], summary: dict[str, Any] | None, ae_metrics: dict[str, Any] | None,
    tc_metrics: dict[str, Any] | None = None,
) -> str:
    """A markdown model card from evaluate's results, train.py's summary.json,
    train_autoencoders.py's metrics.json and train_transcoders.py's metrics.json."""
    lines = ["# Demo model: a small GPT-2 trained offline", ""]
    if summary:
        cfg, a = summary["config"], summary["args"]
        n_params = summary.get("n_params")
        lines += [
            f"GPT-2 architecture: {cfg['n_layers']} layers, d_model {cfg['d_model']}, "
            f"{cfg['n_heads']} heads, context {cfg['ctx_window']}, MLP width {int(cfg['d_model'] * cfg['m_mlp'])}, "
            f"vocabulary {cfg['n_vocab']} (a byte-level BPE trained on the training text plus "
            "generated IOI sentences; in `tokenizer/`), "
            + (
                "input and output embeddings tied (one matrix, stored once)"
                if a.get("tie_embeddings")
                else "untied embeddings"
            )
            + (f", {n_params / 1e6:.2f}M trained parameters" if n_params else "")
            + ". Weights stored in fp16.",
            "",
            "**Training data**: the 16 `*.txt` files of the offline corpus (`../shared/corpus/*.txt`, "
            "never `heldout/`), windows of which get a span of 8-32 tokens copied later in the same "
            "window 30% of the time; generated indirect-object sentences from "
            f"{len(data.TRAIN_TEMPLATES)} training templates ({len(data.INTROS)} intro clauses x "
            f"{len(data.ENDINGS)} endings, minus the {len(data.HELDOUT_TEMPLATES)} held-out pairs; "
            "ABBA and BABA orders; one-token names); and repeated sequences (uniform random tokens "
            "or corpus snippets, 5-39 tokens, each repeated once). Mix (corpus, IOI, repeats): "
            f"{a['curriculum_mix']} for the first {a['curriculum_steps']} steps, then {a['mix']}"
            + (f", and {a['late_mix']} from step {a['late_mix_step']}" if a.get("late_mix") else "")
            + ".",
            "",
            "**Training**: `python -m neuron_explainer.demo.train --out WORKDIR "
            f"--batch {a['batch']} --steps {a['steps']} --minutes {a['minutes']:g}` "
            f"(seed {a['seed']}), "
            f"{summary['steps']} steps of batch {a['batch']} x {a['ctx']} tokens = "
            f"{summary['tokens'] / 1e6:.1f}M tokens in {summary['minutes']:.0f} minutes on "
            + (
                f"one {summary['device']} GPU"
                if summary.get("device", "cpu") != "cpu"
                else f"a shared 2-core CPU ({a['threads']} thread)"
            )
            + f", AdamW (lr {a['lr']}, betas 0.9/0.95, weight decay "
            f"{a['weight_decay']}), {a['warmup']}-step warm-up then cosine to "
            f"{a['min_lr_frac']:g} x lr over the run, gradient clipping {a['clip']}."
            + (
                f" Shipped: the checkpoint at step {summary['best_step']}, the lowest loss "
                f"({summary['best_val_loss']:.3f}) on the validation split (the corpus's last "
                f"{a['val_tokens']} tokens, which training never read)."
                if summary.get("best_step")
                else ""
            ),
            "",
        ]
    h, io, iot, ind = (
        results["heldout"],
        results["ioi_heldout_templates"],
        results["ioi_train_templates"],
        results["induction"],
    )
    lines += [
        "## Measurements (`python -m neuron_explainer.demo.evaluate`)",
        "",
        "| measurement | value |",
        "| --- | --- |",
        f"| held-out loss (`heldout/`, {h['n_tokens']} tokens), model | {h['model_loss']:.3f} nats/token |",
        f"| held-out loss, Kneser-Ney bigram fitted on the training text | {h['kneser_ney_bigram_loss']:.3f} |",
        f"| held-out loss, unigram fitted on the training text | {h['unigram_loss']:.3f} |",
        f"| IOI, {io['n_prompts']} prompts from {len(data.HELDOUT_TEMPLATES)} held-out templates: IO logit > S logit | {io['accuracy']:.1%} |",
        f"| IOI, held-out templates: mean logit difference | {io['mean_logit_diff']:.2f} |",
        f"| IOI, training templates: accuracy / mean logit difference | {iot['accuracy']:.1%} / {iot['mean_logit_diff']:.2f} |",
        f"| induction ({ind['n_sequences']} uniform random sequences of {ind['length']} tokens, repeated once): loss on first copy | {ind['first_copy_loss']:.2f} |",
        f"| induction: loss on second copy | {ind['second_copy_loss']:.2f} |",
        "",
    ]
    if ae_metrics:
        lines += [
            "## Sparse autoencoders (`python -m neuron_explainer.demo.train_autoencoders`)",
            "",
            "| set | reads | latents | layer | FVE | mean L0 | dead fraction |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for site, m in ae_metrics["sets"].items():
            for row in m["layers"]:
                lines.append(
                    f"| {site} | `{m['reads']}` | {m['n_latents']} (TopK k={m['k']}) | {row['layer']} | "
                    f"{row['fve']:.3f} | {row['mean_l0']:.1f} | {row['dead_fraction']:.1%} |"
                )
        a = ae_metrics["args"]
        lines += [
            "",
            f"Trained on {a['tokens']} activations per layer ({a['steps']} steps of "
            f"{a['batch']}); FVE, L0 and dead fraction measured on the last 10%, held out "
            "from their training.",
            "",
        ]
    if tc_metrics:
        a = tc_metrics["args"]
        lines += [
            "## Transcoders and residual-stream SAEs (`python -m neuron_explainer.demo.train_transcoders`)",
            "",
            "| set | reads -> writes | latents | layer | FVE | mean L0 | dead fraction |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for kind, where in (("transcoders", "`mlp_ln.normalized` -> `resid.delta_mlp`"), ("resid_saes", "`resid.post_mlp`")):
            for row in tc_metrics[kind]:
                lines.append(
                    f"| {kind} | {where} | {row['n_latents']} (BatchTopK k={a['k']}, as JumpReLU) | {row['layer']} | "
                    f"{row['fve']:.3f} | {row['mean_l0']:.1f} | {row['dead_fraction']:.1%} |"
                )
        lines += [
            "",
            f"Trained on {a['tokens']} activations per layer ({a['steps']} steps of {a['batch']}); a "
            "transcoder's FVE is of the MLP output it predicts; measured on the last 10%, held out from "
            "their training. Saved in circuit-tracer's transcoder-set layout (`transcoders/`) and "
            "SAELens' layout (`resid_saes/`), in float16.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    from neuron_explainer.models.loading import load_model, model_encoding

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(Path(__file__).parent / "model"))
    ap.add_argument("--corpus-dir", default=str(data.DEFAULT_CORPUS_DIR))
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--n-ioi", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--card", help="also write a markdown model card here")
    ap.add_argument("--results", help="skip evaluating: read the results from this JSON")
    ap.add_argument("--summary", help="train.py's summary.json, for the card")
    ap.add_argument("--ae-metrics", help="train_autoencoders.py's metrics.json, for the card")
    ap.add_argument("--tc-metrics", help="train_transcoders.py's metrics.json, for the card")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.results:  # only (re)write the card from earlier results
        r = json.loads(Path(args.results).read_text())
    else:
        model = load_model(args.model)
        enc = model_encoding(model)
        r = evaluate(model, enc, args.corpus_dir, n_ioi=args.n_ioi)
    print(format_table(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    if args.card:
        load = lambda p: json.loads(Path(p).read_text()) if p else None  # noqa: E731
        Path(args.card).write_text(model_card(r, load(args.summary), load(args.ae_metrics), load(args.tc_metrics)))


if __name__ == "__main__":
    main()
