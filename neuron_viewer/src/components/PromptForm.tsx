import { useState } from "react";
import { api } from "../api/client";
import { useAsync, useDebounced } from "../lib/useAsync";
import { formatTokenList, parseTokenList } from "../state/debuggerState";
import { showToken } from "../state/nodes";
import { ErrorNote, Loading } from "./Notes";
import { TokenChips } from "./TokenChips";

export interface PromptInput {
  prompt: string;
  targets: string[];
  distractors: string[];
}

function tokenize(prompt: string, signal: AbortSignal): Promise<string[]> {
  // any cheap forward pass returns the tokens; the server has no tokenizer-only route
  return api
    .derivedScalars(
      { inferenceRequestSpec: { prompt }, derivedScalarsRequestSpec: { dst: "mlp_post_act", layerIndex: 0, activationIndex: 0 } },
      { quiet: true, signal, label: "tokenizing" },
    )
    .then((r) => r.inferenceAndTokenData.tokensAsStrings);
}

/** The tokens of the prompt being typed (the committed prompt's come with the node table). */
function useLiveTokens(draft: string, committed: string, committedTokens: string[] | null) {
  const settled = useDebounced(draft, 350);
  const needed = settled.trim() !== "" && !(settled === committed && committedTokens);
  const live = useAsync(needed ? settled : null, (signal) => tokenize(settled, signal));
  if (draft === committed && committedTokens) return { tokens: committedTokens, error: null, pending: false };
  return { tokens: live.data ?? live.previous ?? null, error: live.error ?? null, pending: draft !== settled || live.loading };
}

function TokenListInput(props: { label: string; value: string; onChange: (v: string) => void; testId: string }) {
  const tokens = parseTokenList(props.value);
  return (
    <label className="field">
      <span className="field-label">{props.label}</span>
      <input
        data-testid={props.testId}
        value={props.value}
        spellCheck={false}
        title="comma-separated tokens; a leading space is part of the token"
        onChange={(e) => props.onChange(e.target.value)}
      />
      <span className="field-hint">{tokens.map((t) => `“${showToken(t)}”`).join(" ") || "no tokens"}</span>
    </label>
  );
}

/** Prompt, target and distractor tokens; submitting puts them in the URL (and so runs them). */
export function PromptForm({ initial, committedTokens, onSubmit }: {
  initial: PromptInput;
  committedTokens: string[] | null;
  onSubmit: (input: PromptInput) => void;
}) {
  const [prompt, setPrompt] = useState(initial.prompt);
  const [targets, setTargets] = useState(formatTokenList(initial.targets));
  const [distractors, setDistractors] = useState(formatTokenList(initial.distractors));
  const live = useLiveTokens(prompt, initial.prompt, committedTokens);

  const submit = (event?: { preventDefault(): void }) => {
    event?.preventDefault();
    onSubmit({ prompt, targets: parseTokenList(targets), distractors: parseTokenList(distractors) });
  };
  const swap = () => {
    setTargets(distractors);
    setDistractors(targets);
    onSubmit({ prompt, targets: parseTokenList(distractors), distractors: parseTokenList(targets) });
  };

  return (
    <form className="prompt-form card" onSubmit={submit}>
      <label className="field field-wide">
        <span className="field-label">Prompt</span>
        <textarea
          data-testid="prompt-input"
          value={prompt}
          rows={2}
          spellCheck={false}
          onChange={(e) => setPrompt(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey) submit(e);
          }}
        />
      </label>
      <div className="live-tokens">
        {live.error ? (
          <ErrorNote title="Cannot tokenize:" error={live.error} />
        ) : live.tokens ? (
          <div className={live.pending ? "stale" : ""}>
            <span className="muted small">{live.tokens.length} tokens</span>
            <TokenChips tokens={live.tokens} testId="prompt-tokens" />
          </div>
        ) : (
          live.pending && <Loading>tokenizing…</Loading>
        )}
      </div>
      <div className="row">
        <TokenListInput label="Target" value={targets} onChange={setTargets} testId="target-input" />
        <button type="button" className="button-secondary swap" onClick={swap} title="Swap target and distractor" data-testid="swap">
          ⇄
        </button>
        <TokenListInput label="Distractor" value={distractors} onChange={setDistractors} testId="distractor-input" />
        <button type="submit" className="button-primary" data-testid="run">
          Run
        </button>
      </div>
    </form>
  );
}
