import { useState } from "react";
import { formatNumber, heatColor, heatTextColor, maxAbs } from "../lib/format";
import { showToken } from "../state/nodes";
import type { LayerSumRow, SummaryMetric, TdbView, TokenSumRow } from "../state/tdbView";
import { Section } from "./Notes";

/** The most likely next tokens (at the last token, or at the traced node's token). */
export function LogitsPanel({ view }: { view: TdbView }) {
  const hasBaseline = view.baselineLoss !== null;
  return (
    <Section title="Top output logits" testId="logits">
      <table className="compact">
        <thead>
          <tr>
            <th>Token</th>
            <th className="num">Logit</th>
            {hasBaseline && <th className="num">Unablated</th>}
          </tr>
        </thead>
        <tbody>
          {view.logits.map((l, i) => (
            <tr key={i}>
              <td>
                <span className="token-ref">{showToken(l.token)}</span>
              </td>
              <td className="num">{formatNumber(l.logit)}</td>
              {hasBaseline && <td className="num baseline">{formatNumber(l.baseline)}</td>}
            </tr>
          ))}
        </tbody>
      </table>
    </Section>
  );
}

const METRICS: { value: SummaryMetric; label: string }[] = [
  { value: "totalEffect", label: "est. total effect" },
  { value: "directEffect", label: "direct effect" },
  { value: "writeNorm", label: "write norm" },
];

function MetricTabs({ metric, onChange }: { metric: SummaryMetric; onChange: (m: SummaryMetric) => void }) {
  return (
    <span className="toggle small">
      {METRICS.map((m) => (
        <button key={m.value} type="button" aria-pressed={metric === m.value} onClick={() => onChange(m.value)}>
          {m.label}
        </button>
      ))}
    </span>
  );
}

function HeatCell({ value, scale }: { value: number; scale: number }) {
  const n = scale > 0 ? value / scale : 0;
  return (
    <td className="num heat" style={{ background: heatColor(n), color: heatTextColor(n) }}>
      {formatNumber(value)}
    </td>
  );
}

/** Per token: what the embeddings, all MLP nodes and all attention nodes there add up to. */
export function TokenSummaryPanel({ view }: { view: TdbView }) {
  const [metric, setMetric] = useState<SummaryMetric>("totalEffect");
  const rows: TokenSumRow[] = view.tokenSums[metric];
  const scale = maxAbs(rows.flatMap((r) => [r.embedding, r.mlp, r.attention, r.attentionFrom]));
  return (
    <Section title="Per-token summary" testId="token-summary" actions={<MetricTabs metric={metric} onChange={setMetric} />}>
      <p className="muted small">Sums over all nodes (not only the table's), by where they sit.</p>
      <table className="compact">
        <thead>
          <tr>
            <th>#</th>
            <th>Token</th>
            <th className="num">Embedding</th>
            <th className="num">MLP</th>
            <th className="num" title="attention written at this token (as the query)">Attn (query)</th>
            <th className="num" title="attention that read from this token (as the key)">Attn (key)</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.index}>
              <td className="muted">{r.index}</td>
              <td>
                <span className="token-ref">{showToken(r.token)}</span>
              </td>
              <HeatCell value={r.embedding} scale={scale} />
              <HeatCell value={r.mlp} scale={scale} />
              <HeatCell value={r.attention} scale={scale} />
              <HeatCell value={r.attentionFrom} scale={scale} />
            </tr>
          ))}
        </tbody>
      </table>
    </Section>
  );
}

const KIND_NAMES: Record<LayerSumRow["kind"], string> = { embedding: "embeddings", mlp: "MLP", attention: "attention", residual: "residual stream", other: "other" };

/** Per layer and kind: what all its nodes add up to, and how many of them are in the table. */
export function LayerSummaryPanel({ view }: { view: TdbView }) {
  const scale = maxAbs(view.layerSums.flatMap((r) => [r.totalEffect, r.directEffect]));
  return (
    <Section title="Per-layer summary" testId="layer-summary">
      <p className="muted small">
        {view.layerSumsExact ? "Sums over every node of the layer; “in table”: how many of them the node table lists." : "Over the nodes in the table."}
      </p>
      <table className="compact">
        <thead>
          <tr>
            <th>Layer</th>
            <th>Kind</th>
            <th className="num">In table</th>
            <th className="num">Est. total effect</th>
            <th className="num">Direct effect</th>
          </tr>
        </thead>
        <tbody>
          {view.layerSums.map((r) => (
            <tr key={`${r.layer}:${r.kind}`}>
              <td>{r.layer ?? "–"}</td>
              <td>{KIND_NAMES[r.kind]}</td>
              <td className="num">{r.count}</td>
              <HeatCell value={r.totalEffect} scale={scale} />
              <HeatCell value={r.directEffect} scale={scale} />
            </tr>
          ))}
        </tbody>
      </table>
    </Section>
  );
}
