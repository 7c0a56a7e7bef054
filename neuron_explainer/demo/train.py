"""Train the bundled demo model: a small GPT-2 on the offline corpus plus IOI and induction data.

    python -m neuron_explainer.demo.train --out WORKDIR --batch 64 --steps 12000 --minutes 6
    python -m neuron_explainer.demo.train --out WORKDIR --export-only --export-to DIR

WORKDIR gets tokenizer/ (trained first if missing), ckpt.pt (written atomically every
--ckpt-minutes; a rerun with the same --out resumes from it), log.jsonl (one line per eval),
best/ (the model at its lowest loss on the validation split, the corpus's last --val-tokens
tokens, which training never reads) and, at the end, final/ (both in our layout, fp16, with the
tokenizer; `load_model` reads them).

Data (see data.py): corpus windows (with a span copied later in the window 30% of the time),
IOI sentences from the training templates, and repeated sequences. A curriculum starts with
mostly repeated sequences (so that induction heads form early), then moves to the main mix.
Batches are a pure function of (seed, step). The learning rate warms up, then follows a cosine
over the run; the run ends at --steps, or when --minutes of training time are spent, whichever
comes first (the schedule's progress is the larger of the two fractions). Uses CUDA when present:
the shipped model took 4 minutes on one H100 (the command above); on a 2-core CPU the same run
would take about 20 hours, and 75 CPU minutes (6.7M tokens) gave IOI but no induction.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neuron_explainer.demo import data, evaluate
from neuron_explainer.demo.tokenizer_train import train_bpe, training_texts
from neuron_explainer.models.loading import save_model
from neuron_explainer.models.tokenizer import ENDOFTEXT, get_tokenizer, save_tokenizer
from neuron_explainer.models.transformer import Transformer, TransformerConfig

TOKENIZER_DIR = "tokenizer"  # cfg.tokenizer: the tokenizer folder, relative to the model folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="work dir: checkpoints, logs, final model")
    ap.add_argument("--corpus-dir", default=str(data.DEFAULT_CORPUS_DIR))
    ap.add_argument("--minutes", type=float, default=75.0, help="training time budget")
    ap.add_argument("--steps", type=int, default=0, help="max steps (0: only the time budget)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=192)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument(
        "--mix", default="0.45,0.35,0.2", help="corpus,ioi,repeats after the curriculum"
    )
    ap.add_argument("--curriculum-mix", default="0.3,0.2,0.5")
    ap.add_argument("--curriculum-steps", type=int, default=1000)
    ap.add_argument("--late-mix", default="", help="mix from --late-mix-step on (if given)")
    ap.add_argument("--late-mix-step", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument(
        "--val-tokens", type=int, default=80_000, help="corpus tail kept for validation"
    )
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="1 is much faster than 2 when other processes share the CPU",
    )
    ap.add_argument(
        "--tie-embeddings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="share the token embedding and the unembedding while training (and in the exported model: "
        "one matrix, stored once); the shipped model was trained tied",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--export-only", action="store_true", help="export ckpt.pt and stop")
    ap.add_argument("--export-to", help="final model folder (default OUT/final)")
    return ap.parse_args(argv)


def _mix(s: str) -> data.Mix:
    c, i, r = (float(x) for x in s.split(","))
    return data.Mix(c, i, r)


def load_or_train_tokenizer(args: argparse.Namespace, log: Any) -> Any:
    folder = Path(args.out) / TOKENIZER_DIR
    if not (folder / "tokenizer.tiktoken").is_file():
        log(f"training a {args.vocab}-token BPE into {folder}")
        enc, _ = train_bpe(training_texts(args.corpus_dir, args.seed), args.vocab)
        save_tokenizer(enc, folder)
    return get_tokenizer(folder)


def build_stream(args: argparse.Namespace, enc: Any) -> data.MixedStream:
    eot = enc.encode_single_token(ENDOFTEXT)
    docs = enc.encode_ordinary_batch(data.read_corpus(args.corpus_dir))
    corpus = np.concatenate([np.array([*d, eot], dtype=np.int32) for d in docs])
    names = data.single_token_names(enc)
    sentences = data.ioi_training_sentences(200_000, names, seed=args.seed + 1)
    pool = enc.encode_ordinary_batch(sentences)
    (newline,) = enc.encode_ordinary("\n")
    return data.MixedStream(
        corpus, pool, vocab=enc.n_vocab, eot=eot, newline=newline, ctx=args.ctx, seed=args.seed
    )


def model_config(args: argparse.Namespace, enc: Any) -> TransformerConfig:
    return TransformerConfig(
        tokenizer=TOKENIZER_DIR,
        tie_embeddings=args.tie_embeddings,
        ctx_window=args.ctx,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        n_vocab=enc.n_vocab,
    )


def lr_at(args: argparse.Namespace, step: int, progress: float) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    cos = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * cos)


def make_optimizer(model: Transformer, args: argparse.Namespace) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": other, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
    )


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def run_evals(
    model: Transformer, enc: Any, val: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    model.eval()
    dev = next(model.parameters()).device
    fn = lambda t: model(t.to(dev)).cpu()  # noqa: E731
    out: dict[str, Any] = {
        "val_loss": evaluate.lm_loss(fn, val, args.ctx, max_windows=64),
        "ioi_heldout": evaluate.ioi_eval(fn, enc, 128, heldout=True),
        "ioi_train": evaluate.ioi_eval(fn, enc, 128, heldout=False),
        "induction": evaluate.induction_eval(fn, enc.n_vocab, evaluate.eot_id(enc), n=32),
    }
    for k in ("ioi_heldout", "ioi_train"):
        out[k].pop("per_template_accuracy")
    model.train()
    return out


def export(model: Transformer, work: Path, folder: Path) -> Path:
    """Save `model` in fp16 with the tokenizer from work/tokenizer, loadable by load_model."""
    half = Transformer(model.cfg)
    half.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    half.half()
    half.__dict__["source"] = str(work)  # save_model copies work/<cfg.tokenizer> next to the weights
    return save_model(half, folder, overwrite=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    log_file = open(work / "train.txt", "a")  # noqa: SIM115 (open for the whole run)

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    enc = load_or_train_tokenizer(args, log)
    cfg = model_config(args, enc)
    ckpt_path = work / "ckpt.pt"
    ckpt = torch.load(ckpt_path, weights_only=False) if ckpt_path.is_file() else None
    if ckpt is not None:
        cfg = TransformerConfig.from_dict(ckpt["cfg"])
    model = Transformer(cfg).init_weights(seed=args.seed)
    if args.tie_embeddings:
        # one matrix reads and writes each token: a rare token's embedding is trained by every
        # prediction of it, which is what copying arbitrary tokens (induction) needs
        model.tie_embeddings()
    if args.export_only:
        if ckpt is None:
            raise SystemExit(f"no checkpoint at {ckpt_path}")
        model.load_state_dict(ckpt["model"])
        folder = export(model, work, Path(args.export_to or work / "final"))
        log(f"exported step {ckpt['step']} to {folder}")
        return
    model.to(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # no effect on CPU
    opt = make_optimizer(model, args)
    step, elapsed = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step, elapsed = ckpt["step"], ckpt["elapsed"]
        log(f"resumed from step {step} ({elapsed / 60:.1f} min trained)")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"config {cfg.to_dict()}; {n_params / 1e6:.2f}M params; args {vars(args)}")
    stream = build_stream(args, enc)
    # the corpus's last tokens are a validation split that training never reads (heldout/ is
    # for evaluate.py); with many epochs over a small corpus this is what shows overfitting
    if not 0 < args.val_tokens <= len(stream.corpus) // 2:
        raise SystemExit(
            f"error: --val-tokens must be between 1 and half the corpus ({len(stream.corpus) // 2})"
        )
    val = stream.corpus[-args.val_tokens :]
    stream.corpus = stream.corpus[: -args.val_tokens]
    best_val = ckpt.get("best_val", math.inf) if ckpt is not None else math.inf
    best_step = ckpt.get("best_step", 0) if ckpt is not None else 0
    main_mix, cur_mix = _mix(args.mix), _mix(args.curriculum_mix)
    late_mix = _mix(args.late_mix) if args.late_mix else main_mix
    budget = args.minutes * 60
    model.train()
    last_ckpt = time.time()
    t_start, elapsed_start = time.time(), elapsed
    tokens_per_step = args.batch * args.ctx
    window_loss: list[float] = []

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_path,
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "step": step,
                "elapsed": elapsed,
                "cfg": cfg.to_dict(),
                "args": vars(args),
                "best_val": best_val,
                "best_step": best_step,
            },
        )

    while True:
        elapsed = elapsed_start + (time.time() - t_start)
        progress = max(step / args.steps if args.steps else 0.0, elapsed / budget)
        if progress >= 1.0:
            break
        mix = cur_mix if step < args.curriculum_steps else main_mix
        if args.late_mix and step >= args.late_mix_step:
            mix = late_mix
        batch = torch.from_numpy(stream.batch(step, args.batch, mix)).to(args.device)
        lr = lr_at(args, step, progress)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        window_loss.append(loss.item())
        if step % args.eval_every == 0 or step == 50:
            ev = run_evals(model, enc, val, args)
            rec = {
                "step": step,
                "tokens": step * tokens_per_step,
                "minutes": elapsed / 60,
                "lr": lr,
                "train_loss": float(np.mean(window_loss)),
                **ev,
            }
            window_loss = []
            if ev["val_loss"] < best_val:  # OUT/best: the model at its lowest validation loss
                best_val, best_step = ev["val_loss"], step
                export(model, work, work / "best")
            with open(work / "log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            log(
                f"step {step} ({elapsed / 60:.1f} min, {step * tokens_per_step / 1e6:.2f}M tok, "
                f"{step / max(elapsed, 1e-9):.2f} step/s) train {rec['train_loss']:.3f} "
                f"val {ev['val_loss']:.3f} | IOI held-out {ev['ioi_heldout']['accuracy']:.0%} "
                f"({ev['ioi_heldout']['mean_logit_diff']:.2f}) train-tmpl "
                f"{ev['ioi_train']['accuracy']:.0%} | induction "
                f"{ev['induction']['first_copy_loss']:.2f}->{ev['induction']['second_copy_loss']:.2f}"
            )
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            elapsed = elapsed_start + (time.time() - t_start)
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    log(
        f"finished: {step} steps, {step * tokens_per_step / 1e6:.2f}M tokens, {elapsed / 60:.1f} min"
    )
    folder = export(model, work, Path(args.export_to or work / "final"))
    with open(work / "summary.json", "w") as f:
        json.dump(
            {
                "steps": step,
                "tokens": step * tokens_per_step,
                "minutes": elapsed / 60,
                "n_params": n_params,
                "device": torch.cuda.get_device_name() if "cuda" in args.device else args.device,
                "best_step": best_step,
                "best_val_loss": best_val,
                "config": cfg.to_dict(),
                "args": vars(args),
            },
            f,
            indent=2,
        )
    log(f"exported to {folder}")


if __name__ == "__main__":
    main()
