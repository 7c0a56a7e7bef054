import { api } from "../../api/client";
import type { BatchedRequest, TopTokens } from "../../api/types";
import { useAsync } from "../../lib/useAsync";
import { ErrorNote, Loading, Section } from "../Notes";
import { TopTokenList } from "../TopTokenList";
import type { NodeId } from "./nodeId";

type ActivationLocation =
  | "mlp.post_act"
  | "online_autoencoder_latent"
  | "online_attention_autoencoder_latent"
  | "online_residual_autoencoder_latent"
  | "online_transcoder_latent";

// as the original client names them: an MLP latent by the generic latent location (the server
// resolves it to the MLP autoencoder, the one whose input tokens are defined)
const LOCATION: Partial<Record<NodeId["nodeType"], ActivationLocation>> = {
  mlp_neuron: "mlp.post_act",
  mlp_autoencoder_latent: "online_autoencoder_latent",
  attention_autoencoder_latent: "online_attention_autoencoder_latent",
  residual_autoencoder_latent: "online_residual_autoencoder_latent",
  transcoder_latent: "online_transcoder_latent",
};

/** Input tokens are defined for what reads one residual-stream point: neurons, MLP latents and
 * transcoder latents (the MLP's input), residual-stream SAE latents (the stream itself). */
function hasInputTokens(id: NodeId): boolean {
  return ["mlp_neuron", "mlp_autoencoder_latent", "transcoder_latent", "residual_autoencoder_latent"].includes(id.nodeType);
}

/** The original client's logit-lens request: the node named by a backward ablation gives the
 * input tokens that raise it (each token embedding pushed through the node's MLP); a unit
 * activation (forward pass) gives the output tokens its write upvotes. The output comes last. */
export function logitLensRequest(id: NodeId, location: ActivationLocation, numTopTokens = 20): BatchedRequest {
  const index = (passType: "forward" | "backward") => ({
    activationLocationType: location,
    tensorIndices: [0, id.index],
    layerIndex: id.layer,
    passType,
  });
  const input = {
    inferenceRequestSpec: { prompt: "a", ablationSpecs: [{ index: index("backward"), value: 1 }], lossFnConfig: { name: "zero" as const } },
    processingRequestSpecByName: { singleton: { dst: "vocab_token_write_to_input_direction" as const, activationIndex: 0, numTopTokens } },
  };
  const output = {
    inferenceRequestSpec: { prompt: "a", ablationSpecs: [{ index: index("forward"), value: 1 }] },
    processingRequestSpecByName: { singleton: { dst: id.promptDst, layerIndex: id.layer, activationIndex: id.index, numTopTokens } },
  };
  return { inferenceSubRequests: hasInputTokens(id) ? [input, output] : [output] };
}

function topTokensOf(sub: { processingResponseDataByName?: Record<string, unknown> } | undefined): TopTokens | null {
  const data = sub?.processingResponseDataByName?.singleton as { topTokens?: TopTokens | null } | undefined;
  return data?.topTokens ?? null;
}

function TokenRows({ tokens, testId }: { tokens: TopTokens | null; testId: string }) {
  if (!tokens) return <p className="muted">none (the node is zero here)</p>;
  return (
    <dl className="token-rows" data-testid={testId}>
      <dt>most</dt>
      <dd>
        <TopTokenList tokens={tokens.top} limit={20} />
      </dd>
      <dt>least</dt>
      <dd>
        <TopTokenList tokens={tokens.bottom} limit={20} negative />
      </dd>
    </dl>
  );
}

export function UpvotedTokensSection({ id }: { id: NodeId }) {
  const location = LOCATION[id.nodeType] ?? null;
  const lens = useAsync(location ? id.key : null, (signal) =>
    api
      .batched(logitLensRequest(id, location as ActivationLocation), { signal, quiet: true, label: "computing upvoted tokens" })
      .then((r) => ({
        input: hasInputTokens(id) ? topTokensOf(r.inferenceSubResponses[0]) : undefined,
        output: topTokensOf(r.inferenceSubResponses[r.inferenceSubResponses.length - 1]),
      })),
  );
  return (
    <Section title="Tokens it upvotes" testId="upvoted-tokens">
      {!location && (
        <p className="muted">
          This write depends on the token pair it reads; its upvoted tokens for a given prompt are in the debugger's node table.
        </p>
      )}
      {lens.loading && <Loading>computing…</Loading>}
      {lens.error !== undefined && <ErrorNote title="Could not compute the upvoted tokens:" error={lens.error} />}
      {lens.data && (
        <>
          <h3>Output tokens its write upvotes (logit lens)</h3>
          <TokenRows tokens={lens.data.output} testId="output-tokens" />
          <h3>Input tokens that raise it</h3>
          {lens.data.input === undefined ? (
            <p className="muted">Defined for what reads one point of the residual stream: neurons, MLP, transcoder and residual latents.</p>
          ) : (
            <TokenRows tokens={lens.data.input} testId="input-tokens" />
          )}
        </>
      )}
    </Section>
  );
}
