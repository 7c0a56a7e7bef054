import { describe, expect, it } from "vitest";
import type { GraphNode } from "./graphFile";
import { centreOut, layoutGraph, NODE_SPACING, PER_LINE, rowOf } from "./layout";

const node = (node_id: string, feature_type: string, layer: string, ctx_idx: number, influence?: number): GraphNode => ({
  node_id, feature_type, layer, ctx_idx, feature: null, jsNodeId: node_id, ...(influence === undefined ? {} : { influence }),
});

describe("layoutGraph", () => {
  const emb = node("E_1_0", "embedding", "E", 0, 0.2);
  const f0 = node("0_3_1", "cross layer transcoder", "0", 1, 0.5);
  const err = node("1_-1_1", "mlp reconstruction error", "1", 1, 0.7);
  const logit = node("3_9_1", "logit", "3", 1);

  it("puts embeddings at the bottom, logits on top, layers between; x by token", () => {
    const layout = layoutGraph([emb, f0, err, logit], ["<bos>", "a"], 2);
    const p = (n: GraphNode) => layout.positions.get(n.node_id) as { x: number; y: number };
    expect(rowOf(emb, 2)).toBe(0);
    expect(rowOf(f0, 2)).toBe(1);
    expect(rowOf(err, 2)).toBe(2);
    expect(rowOf(logit, 2)).toBe(3);
    // SVG y grows downwards
    expect(p(emb).y).toBeGreaterThan(p(f0).y);
    expect(p(f0).y).toBeGreaterThan(p(err).y);
    expect(p(err).y).toBeGreaterThan(p(logit).y);
    expect(p(f0).x).toBe(p(logit).x);
    expect(p(emb).x).toBeLessThan(p(f0).x);
    expect(layout.rows.map((r) => r.label)).toEqual(["emb", "L0", "L1", "logits"]);
    expect(layout.columns.map((c) => c.token)).toEqual(["<bos>", "a"]);
  });

  it("spreads a cell's nodes from the centre out, most influential in the middle, in lines", () => {
    expect([0, 1, 2, 3, 4].map(centreOut)).toEqual([0, 1, -1, 2, -2]);
    const crowd = Array.from({ length: PER_LINE + 1 }, (_, i) => node(`0_${i}_0`, "cross layer transcoder", "0", 0, 0.1 * (i + 1)));
    const layout = layoutGraph(crowd, ["x"], 1);
    const [first, second, third] = crowd.map((n) => layout.positions.get(n.node_id) as { x: number; y: number });
    expect(second?.x).toBe((first?.x ?? 0) + NODE_SPACING);
    expect(third?.x).toBe((first?.x ?? 0) - NODE_SPACING);
    const last = layout.positions.get(crowd[PER_LINE]?.node_id ?? "");
    expect(last?.y).toBeGreaterThan(first?.y ?? 0); // a second line
    expect(new Set([...layout.positions.values()].map((p) => `${p.x},${p.y}`)).size).toBe(crowd.length); // no overlaps
  });
});
