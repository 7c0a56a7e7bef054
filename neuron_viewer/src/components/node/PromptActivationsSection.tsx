import { useState } from "react";
import { api } from "../../api/client";
import type { TokenAndAttentionScalars } from "../../api/types";
import { maxAbs } from "../../lib/format";
import { useAsync } from "../../lib/useAsync";
import { AttentionPairs } from "../AttentionPairs";
import { ErrorNote, Loading, Section } from "../Notes";
import { TokenHeatmap, type HeatToken } from "../TokenHeatmap";
import { isTokenPairPage } from "../../state/nodes";
import type { NodeId } from "./nodeId";

type Result = { kind: "tokens"; tokens: HeatToken[] } | { kind: "pairs"; tokens: TokenAndAttentionScalars[] };

function run(id: NodeId, prompt: string, signal: AbortSignal): Promise<Result> {
  const inferenceRequestSpec = { prompt };
  const normalize = { dst: id.dst, layerIndex: id.layer, activationIndex: id.index, datasets: [id.dataset] };
  const options = { signal, quiet: true, label: "computing activations on the prompt" };
  if (isTokenPairPage(id.nodeType)) {
    // the latent's share of each token pair is its input gradient on the heads' writes there:
    // the original client names the latent (summed over tokens) as the within-layer gradient
    const withinLayer =
      id.nodeType === "autoencoder_latent_by_token_pair"
        ? {
            activationIndexForWithinLayerGrad: {
              activationLocationType: "online_autoencoder_latent" as const,
              layerIndex: id.layer,
              tensorIndices: ["All", id.index] as ("All" | number)[],
              passType: "forward" as const,
            },
          }
        : {};
    return api
      .derivedAttentionScalars(
        {
          inferenceRequestSpec: { ...inferenceRequestSpec, ...withinLayer },
          derivedAttentionScalarsRequestSpec: { dst: id.promptDst, layerIndex: id.layer, activationIndex: id.index, normalizeActivationsUsingNeuronRecord: normalize },
        },
        options,
      )
      .then((r) => ({ kind: "pairs", tokens: r.derivedAttentionScalarsResponseData.tokenAndAttentionScalarsList }));
  }
  return api
    .derivedScalars(
      {
        inferenceRequestSpec,
        derivedScalarsRequestSpec: { dst: id.promptDst, layerIndex: id.layer, activationIndex: id.index, normalizeActivationsUsingNeuronRecord: normalize },
      },
      options,
    )
    .then((r) => {
      const values = r.derivedScalarsResponseData.activations;
      // normalized by the dataset's max activation when the server has records, else by this prompt's
      const normalized = r.derivedScalarsResponseData.normalizedActivations;
      const scale = maxAbs(values) || 1;
      const tokens = r.inferenceAndTokenData.tokensAsStrings.map((token, i) => ({
        token,
        value: values[i] ?? 0,
        normalized: normalized?.[i] ?? (values[i] ?? 0) / scale,
      }));
      return { kind: "tokens", tokens };
    });
}

/** The node's activations on a prompt the user types (kept in the URL as ?prompt=). */
export function PromptActivationsSection({ id, prompt, onPromptChange }: { id: NodeId; prompt: string; onPromptChange: (prompt: string) => void }) {
  const [draft, setDraft] = useState(prompt);
  const result = useAsync(prompt.trim() ? `${id.key}\u0000${prompt}` : null, (signal) => run(id, prompt, signal));
  const shown = result.data ?? result.previous;
  return (
    <Section title="Activations on a prompt" testId="prompt-activations">
      <form
        className="row"
        onSubmit={(e) => {
          e.preventDefault();
          onPromptChange(draft);
        }}
      >
        <input className="grow" data-testid="node-prompt-input" value={draft} spellCheck={false} onChange={(e) => setDraft(e.target.value)} />
        <button type="submit" className="button-primary" data-testid="node-prompt-run">
          Run
        </button>
      </form>
      {result.loading && !shown && <Loading>computing…</Loading>}
      {result.error !== undefined && <ErrorNote title="Could not compute the activations:" error={result.error} />}
      {shown && (
        <div className={result.loading ? "stale" : ""}>
          {shown.kind === "tokens" ? (
            <TokenHeatmap tokens={shown.tokens} testId="prompt-heatmap" />
          ) : (
            <AttentionPairs tokens={shown.tokens} testId="prompt-heatmap" />
          )}
        </div>
      )}
    </Section>
  );
}
