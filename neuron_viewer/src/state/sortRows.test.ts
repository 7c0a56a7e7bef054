import { describe, expect, it } from "vitest";
import { nodeKind, type NodeRef } from "./nodes";
import { filterRows, sortRows } from "./sortRows";
import type { NodeRow } from "./tdbView";

function row(key: string, node: NodeRef, totalEffect: number, writeNorm = 0): NodeRow {
  return {
    key,
    node,
    kind: nodeKind(node.nodeType),
    values: { activation: 0, writeNorm, directEffect: 0, totalEffect },
    baseline: null,
    upvoted: null,
    inputTokens: [],
    attendedTo: null,
  };
}

const rows = [
  row("a", { nodeType: "mlp_neuron", layerIndex: 1, tensorIndices: [3, 7] }, 0.5, 2),
  row("b", { nodeType: "attention_head", layerIndex: 0, tensorIndices: [3, 1, 2] }, -0.9, 1),
  row("c", { nodeType: "layer", layerIndex: null, tensorIndices: [2, 0] }, 0.1, 3),
  row("d", { nodeType: "mlp_neuron", layerIndex: 0, tensorIndices: [3, 9] }, 0.5, 1),
  row("e", { nodeType: "mlp_neuron", layerIndex: 1, tensorIndices: [1, 9] }, NaN, 0),
];
const keys = (rs: NodeRow[]) => rs.map((r) => r.key);

describe("sortRows", () => {
  it("sorts by magnitude, keeping the server's order on ties, NaN last", () => {
    expect(keys(sortRows(rows, "totalEffect", "abs"))).toEqual(["b", "a", "d", "c", "e"]);
  });

  it("sorts descending and ascending by signed value", () => {
    expect(keys(sortRows(rows, "totalEffect", "desc"))).toEqual(["a", "d", "c", "b", "e"]);
    expect(keys(sortRows(rows, "totalEffect", "asc"))).toEqual(["b", "c", "a", "d", "e"]);
  });

  it("sorts by layer with embeddings first", () => {
    expect(keys(sortRows(rows, "layer", "asc"))).toEqual(["c", "b", "d", "a", "e"]);
    expect(keys(sortRows(rows, "layer", "desc"))).toEqual(["a", "e", "b", "d", "c"]);
  });

  it("sorts by another column", () => {
    expect(keys(sortRows(rows, "writeNorm", "desc"))).toEqual(["c", "a", "b", "d", "e"]);
  });

  it("does not change its input", () => {
    const copy = [...rows];
    sortRows(rows, "totalEffect", "asc");
    expect(rows).toEqual(copy);
  });
});

describe("filterRows", () => {
  it("keeps one kind of node", () => {
    expect(keys(filterRows(rows, "mlp"))).toEqual(["a", "d", "e"]);
    expect(keys(filterRows(rows, "attention"))).toEqual(["b"]);
    expect(keys(filterRows(rows, "embedding"))).toEqual(["c"]);
    expect(keys(filterRows(rows, "all"))).toEqual(keys(rows));
  });
});
