import { describe, expect, it } from "vitest";
import { graphNodeKind, latentIndex, layerCount, parseGraphFile, type GraphNode } from "./graphFile";

const doc = {
  metadata: { slug: "s", scan: "demo", prompt: "a", prompt_tokens: ["<bos>", "a"], info: { n_layers: 4 } },
  qParams: { pinnedIds: [] },
  nodes: [
    { node_id: "E_1_0", feature: 0, layer: "E", ctx_idx: 0, feature_type: "embedding", jsNodeId: "E_1-0" },
    { node_id: "0_9_1", feature: 45, layer: "0", ctx_idx: 1, feature_type: "cross layer transcoder", jsNodeId: "0_9-0" },
    { node_id: "5_3_1", feature: 3, layer: "5", ctx_idx: 1, feature_type: "logit", jsNodeId: "L_3-1" },
  ],
  links: [{ source: "E_1_0", target: "0_9_1", weight: 0.5 }],
  extra: "kept",
};

describe("graph files", () => {
  it("accept Neuronpedia's format and keep unknown fields", () => {
    const graph = parseGraphFile(structuredClone(doc));
    expect(graph.nodes).toHaveLength(3);
    expect((graph as unknown as { extra: string }).extra).toBe("kept");
    expect(layerCount(graph)).toBe(4);
    expect(layerCount({ ...graph, metadata: { ...graph.metadata, info: {} } })).toBe(4); // from the logit's layer
  });

  it("refuse what is not one, saying where", () => {
    expect(() => parseGraphFile([])).toThrow("not a JSON object");
    expect(() => parseGraphFile({ ...doc, nodes: "x" })).toThrow("nodes: not a list");
    expect(() => parseGraphFile({ ...doc, links: [{ source: "E_1_0", target: "nope", weight: 1 }] })).toThrow("links.0.target");
    expect(() => parseGraphFile({ ...doc, nodes: [doc.nodes[0], doc.nodes[0]] })).toThrow("duplicate id");
  });

  it("read kinds and latent indices (from the id when the file has no latent_index)", () => {
    const [emb, feature] = doc.nodes as GraphNode[];
    expect(graphNodeKind(emb as GraphNode)).toBe("embedding");
    expect(graphNodeKind({ ...(feature as GraphNode), feature_type: "mlp reconstruction error" })).toBe("error");
    expect(latentIndex(feature as GraphNode)).toBe(9);
    expect(latentIndex({ ...(feature as GraphNode), latent_index: 12 })).toBe(12);
  });
});
