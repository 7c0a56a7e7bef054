import { describe, expect, it } from "vitest";
import { componentLabel, datasetName, nodeKey, parseNodeKey, tokenAt, type NodeRef } from "./nodes";

describe("node keys", () => {
  it("round-trip", () => {
    const nodes: NodeRef[] = [
      { nodeType: "attention_head", layerIndex: 0, tensorIndices: [14, 6, 2] },
      { nodeType: "mlp_neuron", layerIndex: 11, tensorIndices: [-1, 3071] },
      { nodeType: "layer", layerIndex: null, tensorIndices: [3, 0] },
      { nodeType: "attention_head", layerIndex: 2, tensorIndices: [4, null, 1] },
    ];
    for (const node of nodes) expect(parseNodeKey(nodeKey(node))).toEqual(node);
    expect(nodeKey(nodes[3] as NodeRef)).toBe("attention_head:2:4,*,1");
  });

  it("reject what is not a node", () => {
    for (const bad of ["", "mlp_neuron", "mlp_neuron:1", "mlp_neuron:x:1,2", "unknown_type:1:2,3", "mlp_neuron:1:2,,3"]) {
      expect(parseNodeKey(bad)).toBeNull();
    }
  });
});

describe("labels", () => {
  it("name components", () => {
    expect(componentLabel({ nodeType: "attention_head", layerIndex: 5, tensorIndices: [1, 0, 3] })).toBe("head 5.3");
    expect(componentLabel({ nodeType: "mlp_neuron", layerIndex: 5, tensorIndices: [1, 131] })).toBe("MLP 5:131");
    expect(componentLabel({ nodeType: "mlp_autoencoder_latent", layerIndex: 2, tensorIndices: [1, 77] })).toBe("MLP latent 2:77");
  });

  it("read token positions from the end when negative", () => {
    expect(tokenAt(["a", "b", "c"], -1)).toBe("c");
    expect(tokenAt(["a", "b", "c"], 1)).toBe("b");
    expect(tokenAt(["a"], 5)).toBeNull();
  });

  it("name the dataset as the original client did", () => {
    const base = { modelName: "gpt2-small", hasMlpAutoencoder: false, hasAttentionAutoencoder: false };
    expect(datasetName(base)).toBe("gpt2-small");
    expect(
      datasetName({ ...base, hasMlpAutoencoder: true, hasAttentionAutoencoder: true, mlpAutoencoderName: "ae-mlp", attentionAutoencoderName: "ae-attn" }),
    ).toBe("gpt2-small_ae-mlp_ae-attn");
    expect(
      datasetName({ ...base, hasMlpAutoencoder: true, hasAttentionAutoencoder: true, mlpAutoencoderName: "a/b/ae-mlp/", attentionAutoencoderName: "/x/ae-attn" }),
    ).toBe("gpt2-small_ae-mlp_ae-attn");
  });
});
