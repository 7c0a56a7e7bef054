import { api } from "../../api/client";
import type { BatchedRequest, TopTokens } from "../../api/types";
import { useAsync } from "../../lib/useAsync";
import { ErrorNote, Loading, Section } from "../Notes";
import { TopTokenList } from "../TopTokenList";
import type { NodeId } from "./nodeId";

type ActivationLocation = "mlp.post_act" | "online_mlp_autoencoder_latent" | "online_attention_autoencoder_latent";

const LOCATION: Record<Exclude<NodeId["nodeType"], "attention_head">, ActivationLocation> = {
  mlp_neuron: "mlp.post_act",
  mlp_autoencoder_latent: "online_mlp_autoencoder_latent",
  attention_autoencoder_latent: "online_attention_autoencoder_latent",
};

/** The original client's logit-lens request: a unit gradient (backward pass) at the node gives
 * the input tokens that raise it; a unit activation (forward pass) gives the output tokens its
 * write upvotes. */
export function logitLensRequest(id: NodeId, location: ActivationLocation, numTopTokens = 20): BatchedRequest {
  const index = (passType: "forward" | "backward") => ({
    activationLocationType: location,
    tensorIndices: [0, id.index],
    layerIndex: id.layer,
    passType,
  });
  return {
    inferenceSubRequests: [
      {
        inferenceRequestSpec: { prompt: "a", ablationSpecs: [{ index: index("backward"), value: 1 }], lossFnConfig: { name: "zero" } },
        processingRequestSpecByName: { singleton: { dst: "vocab_token_write_to_input_direction", activationIndex: 0, numTopTokens } },
      },
      {
        inferenceRequestSpec: { prompt: "a", ablationSpecs: [{ index: index("forward"), value: 1 }] },
        processingRequestSpecByName: { singleton: { dst: id.promptDst, layerIndex: id.layer, activationIndex: id.index, numTopTokens } },
      },
    ],
  };
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
  const location = id.nodeType === "attention_head" ? null : LOCATION[id.nodeType];
  const lens = useAsync(location ? id.key : null, (signal) =>
    api
      .batched(logitLensRequest(id, location as ActivationLocation), { signal, quiet: true, label: "computing upvoted tokens" })
      .then((r) => ({ input: topTokensOf(r.inferenceSubResponses[0]), output: topTokensOf(r.inferenceSubResponses[1]) })),
  );
  return (
    <Section title="Tokens it upvotes" testId="upvoted-tokens">
      {!location && (
        <p className="muted">
          A head's write depends on the token pair it reads; its upvoted tokens for a given prompt are in the debugger's node table.
        </p>
      )}
      {lens.loading && <Loading>computing…</Loading>}
      {lens.error !== undefined && <ErrorNote title="Could not compute the upvoted tokens:" error={lens.error} />}
      {lens.data && (
        <>
          <h3>Output tokens its write upvotes (logit lens)</h3>
          <TokenRows tokens={lens.data.output} testId="output-tokens" />
          <h3>Input tokens that raise it</h3>
          <TokenRows tokens={lens.data.input} testId="input-tokens" />
        </>
      )}
    </Section>
  );
}
