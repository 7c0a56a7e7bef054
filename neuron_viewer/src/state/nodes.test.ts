import { describe, expect, it } from "vitest";
import {
  componentLabel,
  datasetName,
  isAblatable,
  nodeKey,
  nodeKind,
  nodePageType,
  parseNodeKey,
  promptDst,
  recordDst,
  tokenAt,
  type NodeRef,
} from "./nodes";

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

describe("residual-stream SAE and transcoder latents", () => {
  const transcoder: NodeRef = { nodeType: "transcoder_latent", layerIndex: 3, tensorIndices: [9, 423] };
  const residual: NodeRef = { nodeType: "residual_autoencoder_latent", layerIndex: 1, tensorIndices: [4, 366] };

  it("parse from keys, are labelled and have node pages", () => {
    expect(parseNodeKey("transcoder_latent:3:9,423")).toEqual(transcoder);
    expect(parseNodeKey(nodeKey(residual))).toEqual(residual);
    expect(componentLabel(transcoder)).toBe("transcoder latent 3:423");
    expect(componentLabel(residual)).toBe("residual latent 1:366");
    expect(nodePageType("transcoder_latent")).toBe("transcoder_latent");
    expect(nodePageType("residual_autoencoder_latent")).toBe("residual_autoencoder_latent");
  });

  it("are an MLP's write and the residual stream, both ablatable", () => {
    expect(nodeKind("transcoder_latent")).toBe("mlp");
    expect(nodeKind("residual_autoencoder_latent")).toBe("residual");
    expect(isAblatable(transcoder) && isAblatable(residual)).toBe(true);
  });

  it("use the records' dsts and the online dsts on a prompt", () => {
    expect(recordDst("transcoder_latent")).toBe("transcoder_latent");
    expect(recordDst("residual_autoencoder_latent")).toBe("residual_autoencoder_latent");
    expect(promptDst("transcoder_latent")).toBe("online_transcoder_latent");
    expect(promptDst("residual_autoencoder_latent")).toBe("online_residual_autoencoder_latent");
  });
});
