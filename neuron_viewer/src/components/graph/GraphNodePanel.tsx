import { api } from "../../api/client";
import type { NeuronRecord, ScoredExplanation } from "../../api/types";
import { graphNodeKind, graphNodeLabel, latentIndex, modelLayer, type GraphFile, type GraphNode } from "../../graph/graphFile";
import { formatNumber } from "../../lib/format";
import { useAsync } from "../../lib/useAsync";
import { recordDst } from "../../state/nodes";
import { Link } from "../Link";
import { ErrorNote, Loading } from "../Notes";
import { TokenHeatmap } from "../TokenHeatmap";

const EXAMPLES = 3;

interface Details {
  record: NeuronRecord | { error: unknown };
  explanation: ScoredExplanation | null;
}

// hovering back and forth asks once per latent
const cache = new Map<string, Promise<Details>>();

function loadDetails(dataset: string, layer: number, index: number): Promise<Details> {
  const key = `${dataset}/${layer}/${index}`;
  let details = cache.get(key);
  if (!details) {
    const node = { dst: recordDst("transcoder_latent"), layerIndex: layer, activationIndex: index };
    const options = { quiet: true, label: "loading a feature's examples" };
    details = Promise.all([
      api.neuronRecord({ ...node, datasets: [dataset] }, options).catch((error: unknown) => ({ error })),
      api
        .existingExplanations({ ...node, explanationDatasets: [], neuronDataset: dataset }, options)
        .then((found) => [...found].sort((a, b) => (b.score ?? -Infinity) - (a.score ?? -Infinity))[0] ?? null)
        .catch(() => null),
    ]).then(([record, explanation]) => ({ record, explanation }));
    details.catch(() => cache.delete(key));
    cache.set(key, details);
  }
  return details;
}

/** A feature's top dataset examples (its transcoder latent's records) and explanation. */
function FeatureDetails({ dataset, layer, index }: { dataset: string; layer: number; index: number }) {
  const details = useAsync(`${dataset}/${layer}/${index}`, () => loadDetails(dataset, layer, index));
  if (details.loading) return <Loading>loading examples…</Loading>;
  if (!details.data) return null;
  const { record, explanation } = details.data;
  return (
    <>
      <p data-testid="graph-node-explanation">{explanation ? explanation.explanation : <span className="muted">no explanation stored</span>}</p>
      {"error" in record ? (
        <ErrorNote title="No dataset examples:" error={record.error} />
      ) : (
        <div className="sequences compact" data-testid="graph-node-examples">
          {record.topActivations.slice(0, EXAMPLES).map((seq, i) => (
            <TokenHeatmap key={i} tokens={seq.map((t) => ({ token: t.token, value: t.scalar, normalized: t.normalizedScalar }))} testId="graph-example" />
          ))}
        </div>
      )}
    </>
  );
}

interface Props {
  graph: GraphFile;
  node: GraphNode;
  dataset: string;
  pinned: boolean;
  nodePage: string | null;
  ablateLink: string | null;
  onTogglePin: () => void;
}

/** What the side panel shows of the node last hovered: facts, and for a feature its examples,
 * explanation, node page and an ablation in the debugger. */
export function GraphNodePanel({ graph, node, dataset, pinned, nodePage, ablateLink, onTogglePin }: Props) {
  const kind = graphNodeKind(node);
  const tokens = graph.metadata.prompt_tokens;
  const layer = modelLayer(node);
  const latent = latentIndex(node);
  return (
    <section className="card graph-node-panel" data-testid="graph-node-panel" data-node-id={node.node_id}>
      <header className="card-header">
        <h2>{graphNodeLabel(node, tokens)}</h2>
        <button type="button" data-testid="pin-button" onClick={onTogglePin}>
          {pinned ? "unpin" : "pin"}
        </button>
      </header>
      <dl className="facts">
        <dt>Kind</dt>
        <dd>{node.feature_type}</dd>
        <dt>Token</dt>
        <dd>
          {JSON.stringify(tokens[node.ctx_idx] ?? "?")} at {node.ctx_idx}
        </dd>
        {node.activation !== null && node.activation !== undefined && (
          <>
            <dt>Activation</dt>
            <dd>{formatNumber(node.activation)}</dd>
          </>
        )}
        {node.influence !== null && node.influence !== undefined && (
          <>
            <dt title="cumulative influence fraction: the share of all influence on the output carried by this node and every more influential one">Influence</dt>
            <dd>{formatNumber(node.influence)}</dd>
          </>
        )}
        {node.clerp && kind !== "logit" && (
          <>
            <dt>Label</dt>
            <dd>{node.clerp}</dd>
          </>
        )}
      </dl>
      {kind === "feature" && layer !== null && latent !== null ? (
        <>
          <div className="row">
            {nodePage && (
              <Link data-testid="graph-node-page-link" href={nodePage}>
                open its node page
              </Link>
            )}
            {ablateLink && (
              <Link data-testid="ablate-in-debugger" href={ablateLink}>
                ablate in the debugger
              </Link>
            )}
          </div>
          <FeatureDetails dataset={dataset} layer={layer} index={latent} />
        </>
      ) : (
        <p className="muted small" data-testid="graph-node-info">
          {kind === "error"
            ? "What the transcoder does not reconstruct of this MLP's output here; it has no node page."
            : kind === "embedding"
              ? "The token's embedding; it has no node page."
              : "An output logit; it has no node page."}
        </p>
      )}
    </section>
  );
}
