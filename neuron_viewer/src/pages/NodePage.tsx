import { useMemo } from "react";
import { useModelInfo } from "../api/hooks";
import { Link } from "../components/Link";
import { ExplanationSection } from "../components/node/ExplanationSection";
import { makeNodeId } from "../components/node/nodeId";
import { PromptActivationsSection } from "../components/node/PromptActivationsSection";
import { RecordsSection } from "../components/node/RecordsSection";
import { UpvotedTokensSection } from "../components/node/UpvotedTokensSection";
import { debuggerPath, navigate, nodePagePath, useLocation, type NodePageType } from "../router";
import { EXAMPLE_PROMPT } from "../state/debuggerState";
import { capitalize, datasetName, nodeTypeName } from "../state/nodes";

interface Props {
  model: string;
  nodeType: NodePageType;
  layer: number;
  index: number;
}

/** One node: its dataset examples, explanation, activations on a typed prompt, upvoted tokens. */
export function NodePage({ model, nodeType, layer, index }: Props) {
  const { search } = useLocation();
  const prompt = new URLSearchParams(search).get("prompt") ?? EXAMPLE_PROMPT;
  const info = useModelInfo();
  const id = useMemo(() => makeNodeId(model, nodeType, layer, index), [model, nodeType, layer, index]);
  const here = (i: number, q = search) => nodePagePath(model, nodeType, layer, i, q);
  const served = info.data ? datasetName(info.data) : null;

  return (
    <div className="node-page" data-testid="node-page">
      <header className="page-header">
        <h1 data-testid="node-title">
          {capitalize(nodeTypeName(nodeType))} {layer}:{index}
        </h1>
        <nav className="row">
          {index > 0 && <Link href={here(index - 1)}>← {index - 1}</Link>}
          <Link href={here(index + 1)}>{index + 1} →</Link>
          <Link href={debuggerPath(model, new URLSearchParams({ prompt }).toString())}>open the debugger on this prompt</Link>
          {nodeType === "attention_autoencoder_latent" && (
            <Link data-testid="token-pair-link" href={nodePagePath(model, "autoencoder_latent_by_token_pair", layer, index, search)}>
              by token pair
            </Link>
          )}
          {nodeType === "autoencoder_latent_by_token_pair" && (
            <Link href={nodePagePath(model, "attention_autoencoder_latent", layer, index, search)}>by token</Link>
          )}
        </nav>
        {served && served !== model && (
          <p className="muted small">
            Note: this server runs “{served}”; the page asks for dataset “{model}”.
          </p>
        )}
        {info.data && layer >= info.data.nLayers && <p className="error-note">The model has {info.data.nLayers} layers (0–{info.data.nLayers - 1}).</p>}
      </header>
      <div className="node-grid">
        <div>
          <ExplanationSection id={id} />
          <PromptActivationsSection
            key={`${id.key}\u0000${prompt}`}
            id={id}
            prompt={prompt}
            onPromptChange={(p) => navigate(here(index, `?${new URLSearchParams({ prompt: p })}`), { replace: true })}
          />
          <RecordsSection id={id} />
        </div>
        <aside>
          <UpvotedTokensSection id={id} />
        </aside>
      </div>
    </div>
  );
}
