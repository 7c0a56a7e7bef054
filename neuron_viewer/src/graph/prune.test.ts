import { describe, expect, it } from "vitest";
import type { GraphLink, GraphNode } from "./graphFile";
import { edgeScores, pruneGraph, selectNodes } from "./prune";

function node(node_id: string, feature_type: string, layer: string, ctx_idx: number, extra: Partial<GraphNode> = {}): GraphNode {
  return { node_id, feature_type, layer, ctx_idx, feature: null, jsNodeId: node_id, ...extra };
}

// Two tokens, two features, one error, one logit (p = 1):
//   E0 -1-> F1, E1 -1-> F1, E0 -1-> F2, E1 -3-> F2, F1 -3-> L, F2 -(-1)-> L, X -1-> F2
// By hand: into L, |3| + |-1| = 4, so Â[L,F1] = .75, Â[L,F2] = .25; through L = 1, so the
// scores are .75 (F1->L) and .25 (F2->L), and influence(F1) = .75, influence(F2) = .25. Into F1:
// .5 each from E0, E1: scores .375, .375. Into F2: |1| + |3| + |1| = 5: E0 .2 * .25 = .05,
// E1 .6 * .25 = .15, X .2 * .25 = .05. Total 2.0.
const E0 = node("E_10_0", "embedding", "E", 0, { influence: 0.3 });
const E1 = node("E_11_1", "embedding", "E", 1, { influence: 0.4 });
const F1 = node("0_5_1", "cross layer transcoder", "0", 1, { influence: 0.6, latent_index: 5 });
const F2 = node("1_7_1", "cross layer transcoder", "1", 1, { influence: 0.9, latent_index: 7 });
const X = node("0_-1_0", "mlp reconstruction error", "0", 0, { influence: 0.95 });
const L = node("3_42_1", "logit", "3", 1, { token_prob: 1, is_target_logit: true });
const nodes = [E0, E1, F1, F2, X, L];
const link = (source: GraphNode, target: GraphNode, weight: number): GraphLink => ({ source: source.node_id, target: target.node_id, weight });
const links = [link(E0, F1, 1), link(E1, F1, 1), link(E0, F2, 1), link(E1, F2, 3), link(F1, L, 3), link(F2, L, -1), link(X, F2, 1)];
const ids = (g: { nodes: GraphNode[] }) => g.nodes.map((n) => n.node_id).sort();

describe("edge scores", () => {
  it("are the influence on the output through each edge (computed by hand)", () => {
    const scores = edgeScores(nodes, links);
    [0.375, 0.375, 0.05, 0.15, 0.75, 0.25, 0.05].forEach((expected, i) => expect(scores[i]).toBeCloseTo(expected, 10));
  });
});

describe("node threshold", () => {
  it("keeps the nodes below it and the one crossing it, embeddings and logits always", () => {
    expect(ids({ nodes: selectNodes(nodes, 0.5) })).toEqual(ids({ nodes: [E0, E1, F1, L] }));
    expect(ids({ nodes: selectNodes(nodes, 0.8) })).toEqual(ids({ nodes: [E0, E1, F1, F2, L] }));
    expect(selectNodes(nodes, 1)).toHaveLength(6);
  });
});

describe("pruneGraph", () => {
  it("keeps everything at 1, 1", () => {
    const g = pruneGraph({ nodes, links }, { node: 1, edge: 1 });
    expect(g.nodes).toHaveLength(6);
    expect(g.links).toHaveLength(7);
  });

  it("drops the error node's edge at edge 0.97 (it carries the last 2.5%)", () => {
    // sorted scores / 2: .375 .1875 .1875 .125 .075 .025 .025 -> cumulative reaches .97 at the 6th
    const g = pruneGraph({ nodes, links }, { node: 1, edge: 0.97 });
    expect(g.links).toHaveLength(6);
    // the 6th is the first of the two .05 edges (E0->F2, before X->F2): the error node reads
    // into nothing kept and is dropped
    expect(ids(g)).toEqual(ids({ nodes: [E0, E1, F1, F2, L] }));
  });

  it("drops a feature whose incoming edges are pruned, and then its outgoing edge", () => {
    // .375 + .1875 + .1875 = .75 of the total: F1's three edges; F2 -> L (.125) reaches .875
    // but F2 then reads nothing and goes, and F2 -> L with it
    const g = pruneGraph({ nodes, links }, { node: 1, edge: 0.8 });
    expect(ids(g)).toEqual(ids({ nodes: [E0, E1, F1, L] }));
    expect(g.links.map((l) => `${l.source}>${l.target}`).sort()).toEqual(["0_5_1>3_42_1", "E_10_0>0_5_1", "E_11_1>0_5_1"]);
  });

  it("prunes nodes first: at node 0.5, F2 and the error go with their edges", () => {
    const g = pruneGraph({ nodes, links }, { node: 0.5, edge: 1 });
    expect(ids(g)).toEqual(ids({ nodes: [E0, E1, F1, L] }));
    expect(g.links).toHaveLength(3);
  });
});
