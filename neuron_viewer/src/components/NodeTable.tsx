import { useMemo } from "react";
import type { ExplanationLookup } from "../api/hooks";
import { formatNumber } from "../lib/format";
import { nodePagePath } from "../router";
import {
  isAblated,
  nextSort,
  toggleAblation,
  traceUpstream,
  type DebuggerState,
  type KindFilter,
  type SortKey,
} from "../state/debuggerState";
import {
  componentIndex,
  componentLabel,
  isAblatable,
  nodePageType,
  nodeTokenPositions,
  nodeTypeName,
  sameNode,
  showToken,
  tokenAt,
} from "../state/nodes";
import { filterRows, sortRows } from "../state/sortRows";
import type { NodeRow, NodeValues, TdbView } from "../state/tdbView";
import { Link } from "./Link";
import { TopTokenList } from "./TopTokenList";

interface Column {
  key: SortKey;
  label: string;
  title: string;
}

const VALUE_COLUMNS: (Column & { key: keyof NodeValues })[] = [
  { key: "activation", label: "Activation", title: "the node's value in the forward pass" },
  { key: "writeNorm", label: "Write norm", title: "length of what the node adds to the residual stream" },
  { key: "directEffect", label: "Direct effect", title: "the write projected on the gradient of the objective at the final residual stream" },
  { key: "totalEffect", label: "Est. total effect", title: "activation × gradient: first-order estimate of the effect of ablating the node" },
];

const FILTERS: { value: KindFilter; label: string }[] = [
  { value: "all", label: "all" },
  { value: "attention", label: "attention" },
  { value: "mlp", label: "MLP" },
  { value: "residual", label: "residual" },
  { value: "embedding", label: "embeddings" },
];

interface Props {
  view: TdbView;
  state: DebuggerState;
  model: string;
  explanations: Map<string, ExplanationLookup>;
  explanationsUnavailable: string | null;
  onChange: (next: DebuggerState, options?: { replace?: boolean }) => void;
}

/** The visible rows in table order (also what the explanation look-ups are for). */
export function visibleRows(view: TdbView, state: DebuggerState): NodeRow[] {
  return sortRows(filterRows(view.rows, state.filter), state.sort.key, state.sort.dir);
}

export function NodeTable({ view, state, model, explanations, explanationsUnavailable, onChange }: Props) {
  const rows = useMemo(() => visibleRows(view, state), [view, state]);
  const counts = useMemo(() => {
    const c: Record<string, number> = { all: view.rows.length };
    for (const r of view.rows) c[r.kind] = (c[r.kind] ?? 0) + 1;
    return c;
  }, [view.rows]);
  const hasBaseline = view.baselineLoss !== null;
  const sortBy = (key: SortKey) => onChange({ ...state, sort: nextSort(state.sort, key) }, { replace: true });

  return (
    <div className="card node-table-card">
      <div className="row table-toolbar">
        <span className="toggle" role="group" aria-label="Show">
          {FILTERS.filter((f) => f.value !== "residual" || (counts.residual ?? 0) > 0 || state.filter === "residual").map((f) => (
            <button
              key={f.value}
              type="button"
              data-testid={`filter-${f.value}`}
              aria-pressed={state.filter === f.value}
              onClick={() => onChange({ ...state, filter: f.value }, { replace: true })}
            >
              {f.label} ({counts[f.value] ?? 0})
            </button>
          ))}
        </span>
        {explanationsUnavailable && <span className="muted small">Explanations unavailable: {explanationsUnavailable}</span>}
        {hasBaseline && <span className="muted small">grey: the same value without ablations</span>}
      </div>
      <div className="table-scroll">
        <table className="node-table" data-testid="node-table">
          <thead>
            <tr>
              <th>Node</th>
              <th>Actions</th>
              <SortHeader column={{ key: "layer", label: "Layer", title: "layer (embeddings first)" }} state={state} onSort={sortBy} />
              <th>Token(s)</th>
              {VALUE_COLUMNS.map((c) => (
                <SortHeader key={c.key} column={c} state={state} onSort={sortBy} numeric />
              ))}
              <th>Top upvoted tokens</th>
              <th>Explanation</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((row) => (
              <NodeTableRow
                key={row.key}
                row={row}
                view={view}
                state={state}
                model={model}
                explanation={explanations.get(row.key)}
                onChange={onChange}
              />
            ))}
          </tbody>
        </table>
        {rows.length === 0 && <p className="muted">No nodes of this kind among the top and bottom nodes.</p>}
      </div>
    </div>
  );
}

function SortHeader({ column, state, onSort, numeric }: { column: Column; state: DebuggerState; onSort: (key: SortKey) => void; numeric?: boolean }) {
  const active = state.sort.key === column.key;
  const arrow = !active ? "" : state.sort.dir === "abs" ? " |↓|" : state.sort.dir === "desc" ? " ↓" : " ↑";
  const ariaSort = !active ? "none" : state.sort.dir === "asc" ? "ascending" : "descending";
  return (
    <th className={numeric ? "num" : ""} aria-sort={ariaSort} title={column.title}>
      <button type="button" className="sort-button" data-testid={`sort-${column.key}`} onClick={() => onSort(column.key)}>
        {column.label}
        {arrow}
      </button>
    </th>
  );
}

function ValueCell({ value, baseline }: { value: number; baseline: number | undefined }) {
  return (
    <td className="num">
      <span data-value={value}>{formatNumber(value)}</span>
      {baseline !== undefined && (
        <span className="baseline" data-testid="baseline" data-value={baseline} title="without ablations">
          {formatNumber(baseline)}
        </span>
      )}
    </td>
  );
}

function TokensCell({ row, tokens }: { row: NodeRow; tokens: string[] }) {
  const { token, keyToken } = nodeTokenPositions(row.node);
  const show = (p: number | null | undefined) => (
    <span className="token-ref" title={`token ${p}`}>
      {showToken(tokenAt(tokens, p) ?? "?")}
    </span>
  );
  return (
    <td className="tokens">
      {show(token)}
      {row.node.nodeType === "attention_head" && <> ← {show(keyToken)}</>}
      {row.attendedTo && (
        <span className="muted small">
          {" "}
          ← {row.attendedTo.map((a) => showToken(tokenAt(tokens, a.token) ?? "?")).join(", ")}
        </span>
      )}
    </td>
  );
}

function ExplanationCell({ lookup, node }: { lookup: ExplanationLookup | undefined; node: NodeRow["node"] }) {
  if (!nodePageType(node.nodeType)) return <td />;
  if (!lookup) return <td className="muted">…</td>;
  if (lookup.status === "found") {
    return (
      <td className="explanation" title={lookup.best.datasetName}>
        {lookup.best.explanation}
        {lookup.best.score !== null && lookup.best.score !== undefined && <span className="muted small"> ({formatNumber(lookup.best.score)})</span>}
      </td>
    );
  }
  return (
    <td className="muted" title={lookup.status === "error" ? lookup.message : "no explanation stored"}>
      –
    </td>
  );
}

function NodeTableRow({ row, view, state, model, explanation, onChange }: {
  row: NodeRow;
  view: TdbView;
  state: DebuggerState;
  model: string;
  explanation: ExplanationLookup | undefined;
  onChange: Props["onChange"];
}) {
  const pageType = nodePageType(row.node.nodeType);
  const index = componentIndex(row.node);
  const ablated = isAblated(state, row.node);
  const traced = state.trace !== null && sameNode(state.trace.node, row.node);
  const label = componentLabel(row.node);
  return (
    <tr data-testid="node-row" data-node-key={row.key} data-kind={row.kind} className={`${ablated ? "row-ablated" : ""} ${traced ? "row-traced" : ""}`}>
      <td className="node-cell" title={nodeTypeName(row.node.nodeType)}>
        {pageType && row.node.layerIndex !== null && index !== null ? (
          <Link
            data-testid="node-link"
            href={nodePagePath(model, pageType, row.node.layerIndex, index, new URLSearchParams({ prompt: state.prompt }).toString())}
          >
            {label}
          </Link>
        ) : (
          label
        )}
        {row.node.nodeType === "attention_autoencoder_latent" && row.node.layerIndex !== null && index !== null && (
          <>
            {" "}
            <Link
              data-testid="token-pair-link"
              title="the latent's share of each token pair (as the original client links it)"
              href={nodePagePath(model, "autoencoder_latent_by_token_pair", row.node.layerIndex, index, new URLSearchParams({ prompt: state.prompt }).toString())}
            >
              pairs
            </Link>
          </>
        )}
      </td>
      <td className="actions">
        {isAblatable(row.node) && (
          <>
            <button type="button" data-testid="ablate" onClick={() => onChange(toggleAblation(state, row.node))}>
              {ablated ? "un-ablate" : "ablate"}
            </button>
            {row.node.nodeType === "attention_head" ? (
              <span className="trace-group" title="trace upstream through the head's query, key or value">
                trace
                {(["Q", "K", "V"] as const).map((t) => (
                  <button key={t} type="button" data-testid={`trace-${t}`} onClick={() => onChange(traceUpstream(state, row.node, t))}>
                    {t}
                  </button>
                ))}
              </span>
            ) : (
              <button type="button" data-testid="trace" title="trace upstream" onClick={() => onChange(traceUpstream(state, row.node))}>
                trace
              </button>
            )}
          </>
        )}
      </td>
      <td className="num" data-testid="layer-cell">{row.node.layerIndex ?? "–"}</td>
      <TokensCell row={row} tokens={view.tokens} />
      {VALUE_COLUMNS.map((c) => (
        <ValueCell key={c.key} value={row.values[c.key]} baseline={row.baseline?.[c.key]} />
      ))}
      <td className="upvoted">{row.upvoted && <TopTokenList tokens={row.upvoted.top} limit={4} />}</td>
      <ExplanationCell lookup={explanation} node={row.node} />
    </tr>
  );
}

