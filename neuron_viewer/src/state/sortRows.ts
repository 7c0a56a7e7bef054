import type { KindFilter, SortDir, SortKey } from "./debuggerState";
import type { NodeRow } from "./tdbView";

function sortValue(row: NodeRow, key: SortKey): number {
  if (key === "layer") return row.node.layerIndex ?? -1; // embeddings before layer 0
  return row.values[key];
}

/** The node table's order. Ties keep the server's order; NaN sorts last. */
export function sortRows(rows: readonly NodeRow[], key: SortKey, dir: SortDir): NodeRow[] {
  const score = (row: NodeRow) => {
    const v = sortValue(row, key);
    if (Number.isNaN(v)) return -Infinity;
    if (dir === "abs") return Math.abs(v);
    return dir === "desc" ? v : -v;
  };
  return rows
    .map((row, i) => ({ row, i, s: score(row) }))
    .sort((a, b) => b.s - a.s || a.i - b.i)
    .map(({ row }) => row);
}

export function filterRows(rows: readonly NodeRow[], filter: KindFilter): NodeRow[] {
  return filter === "all" ? [...rows] : rows.filter((row) => row.kind === filter);
}
