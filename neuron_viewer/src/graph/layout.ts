// Where each graph node is drawn: x by token position (one column per prompt token), y by layer
// (embeddings in the bottom row, then layers 0..n-1, logits in the top row). Nodes sharing a
// cell (same layer, same token) sit side by side, the most influential in the middle, in lines
// of at most PER_LINE (a crowded cell grows upwards rather than widening every column).
import { graphNodeKind, type GraphNode } from "./graphFile";

export interface Point {
  x: number;
  y: number;
}

export interface GraphLayout {
  width: number;
  height: number;
  columnWidth: number;
  positions: Map<string, Point>;
  /** One per prompt token: its column's centre. */
  columns: { ctx: number; x: number; token: string }[];
  /** Bottom to top: embeddings, layers, logits. */
  rows: { label: string; y: number }[];
}

export const NODE_SPACING = 13;
const LINE_SPACING = 13;
export const PER_LINE = 5;
const MIN_COLUMN_WIDTH = 60;
const MIN_ROW_HEIGHT = 72;
const MARGIN = { left: 72, right: 16, top: 24, bottom: 56 };

/** Row of a node: 0 for embeddings, layer + 1 for features and errors, n_layers + 1 for logits. */
export function rowOf(node: GraphNode, nLayers: number): number {
  switch (graphNodeKind(node)) {
    case "embedding":
      return 0;
    case "logit":
      return nLayers + 1;
    default: {
      const layer = Number(node.layer);
      return Number.isFinite(layer) ? Math.min(Math.max(layer, 0), nLayers - 1) + 1 : 1;
    }
  }
}

/** Most influential first (lowest cumulative fraction); logits by probability. */
function importance(node: GraphNode): number {
  if (graphNodeKind(node) === "logit") return -(node.token_prob ?? 0);
  return node.influence ?? Infinity;
}

/** Offsets from a cell's centre: 0, +1, -1, +2, -2 ... spacings, in importance order. */
export function centreOut(i: number): number {
  return i === 0 ? 0 : i % 2 === 1 ? (i + 1) / 2 : -i / 2;
}

export function layoutGraph(nodes: readonly GraphNode[], promptTokens: readonly string[], nLayers: number): GraphLayout {
  const nColumns = Math.max(promptTokens.length, ...nodes.map((n) => n.ctx_idx + 1), 1);
  const cells = new Map<string, GraphNode[]>();
  for (const n of nodes) {
    const key = `${rowOf(n, nLayers)}:${n.ctx_idx}`;
    const cell = cells.get(key);
    if (cell) cell.push(n);
    else cells.set(key, [n]);
  }
  const widest = Math.max(1, ...[...cells.values()].map((c) => c.length));
  const perLine = Math.min(widest, PER_LINE);
  const maxLines = Math.ceil(widest / perLine);
  const columnWidth = Math.max(MIN_COLUMN_WIDTH, (perLine + 1) * NODE_SPACING);
  const rowHeight = Math.max(MIN_ROW_HEIGHT, (maxLines + 1) * LINE_SPACING);
  const nRows = nLayers + 2;
  const width = MARGIN.left + nColumns * columnWidth + MARGIN.right;
  const height = MARGIN.top + nRows * rowHeight + MARGIN.bottom;
  const columnX = (ctx: number) => MARGIN.left + (ctx + 0.5) * columnWidth;
  const rowY = (row: number) => MARGIN.top + (nRows - 1 - row + 0.5) * rowHeight;

  const positions = new Map<string, Point>();
  for (const [key, cell] of cells) {
    const [row, ctx] = key.split(":").map(Number) as [number, number];
    const lines = Math.ceil(cell.length / perLine);
    [...cell]
      .sort((a, b) => importance(a) - importance(b) || a.node_id.localeCompare(b.node_id))
      .forEach((n, i) => {
        const line = Math.floor(i / perLine);
        const x = columnX(ctx) + centreOut(i % perLine) * NODE_SPACING;
        positions.set(n.node_id, { x, y: rowY(row) + (line - (lines - 1) / 2) * LINE_SPACING });
      });
  }
  const rows = Array.from({ length: nRows }, (_, row) => ({
    label: row === 0 ? "emb" : row === nRows - 1 ? "logits" : `L${row - 1}`,
    y: rowY(row),
  }));
  const columns = Array.from({ length: nColumns }, (_, ctx) => ({ ctx, x: columnX(ctx), token: promptTokens[ctx] ?? "" }));
  return { width, height, columnWidth, positions, columns, rows };
}
