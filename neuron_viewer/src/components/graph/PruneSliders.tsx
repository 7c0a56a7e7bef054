import type { PruneThresholds } from "../../graph/prune";

interface Props {
  thresholds: PruneThresholds;
  shown: { nodes: number; links: number };
  total: { nodes: number; links: number };
  onChange: (next: PruneThresholds) => void;
}

function Slider({ label, title, value, testId, onChange }: { label: string; title: string; value: number; testId: string; onChange: (v: number) => void }) {
  return (
    <label className="field-inline" title={title}>
      {label}
      <input type="range" min={0} max={1} step={0.01} value={value} data-testid={testId} onChange={(e) => onChange(Number(e.target.value))} />
      <output>{value.toFixed(2)}</output>
    </label>
  );
}

/** Client-side pruning of what the server returned (src/graph/prune.ts says exactly how). */
export function PruneSliders({ thresholds, shown, total, onChange }: Props) {
  return (
    <div className="row graph-sliders" data-testid="prune-sliders">
      <Slider
        label="node influence"
        title="keep the fewest nodes that carry this fraction of the influence on the output (cumulative influence, as in circuit-tracer); embeddings and logits stay"
        value={thresholds.node}
        testId="prune-node"
        onChange={(node) => onChange({ ...thresholds, node })}
      />
      <Slider
        label="edge influence"
        title="then keep the fewest links that carry this fraction of the influence flowing through the shown links"
        value={thresholds.edge}
        testId="prune-edge"
        onChange={(edge) => onChange({ ...thresholds, edge })}
      />
      <span className="muted small" data-testid="graph-counts" data-nodes={shown.nodes} data-links={shown.links}>
        {shown.nodes} of {total.nodes} nodes, {shown.links} of {total.links} links
      </span>
    </div>
  );
}
