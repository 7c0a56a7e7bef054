import { describe, expect, it } from "vitest";
import type { BatchedResponse, MirroredNodeIndex, SubResponse } from "../api/types";
import { toTdbView } from "./tdbView";

const node = (nodeType: MirroredNodeIndex["nodeType"], layerIndex: number | null, tensorIndices: number[]): MirroredNodeIndex => ({
  nodeType,
  layerIndex,
  tensorIndices,
  passType: "forward",
});

const NODES = [node("attention_head", 0, [2, 1, 3]), node("mlp_neuron", 1, [2, 7]), node("layer", null, [0, 0])];

function sub(loss: number, scale: number, order = [0, 1, 2]): SubResponse {
  const nodes = order.map((i) => NODES[i] as MirroredNodeIndex);
  const values = (base: number[]) => order.map((i) => (base[i] ?? 0) * scale);
  return {
    inferenceResponse: {
      inferenceAndTokenData: { inferenceTime: 0.5, loss, tokensAsInts: [1, 2, 3], tokensAsStrings: ["<|endoftext|>", " a", " b"] },
    },
    processingResponseDataByName: {
      topKComponents: {
        responseDataType: "multiple_top_k_derived_scalars_response_data",
        nodeIndices: nodes,
        activationsByGroupId: {
          activation: values([0.4, 1.5, 1]),
          write_norm: values([0.2, 3, 0.7]),
          direction_write: values([-0.1, 0.3, 0]),
          act_times_grad: values([-0.2, 0.6, 0.05]),
        },
        intermediateSumActivationsByDstByGroupId: {},
      },
      componentSumsForTokenDisplay: {
        responseDataType: "multiple_top_k_derived_scalars_response_data",
        nodeIndices: [],
        activationsByGroupId: {},
        intermediateSumActivationsByDstByGroupId: {
          act_times_grad: {
            token_attribution: { tensorType: "tensor_1d", value: [0.1, 0.2, 0.3] },
            mlp_act_times_grad: { tensorType: "tensor_1d", value: [1, 2, 3] },
            unflattened_attn_act_times_grad: {
              tensorType: "tensor_2d",
              value: [
                [1, 0, 0],
                [2, 3, 0],
                [4, 5, 6],
              ],
            },
          },
        },
      },
      upvotedOutputTokens: {
        responseDataType: "scored_tokens_response_data",
        nodeIndices: nodes,
        topTokensList: order.map((i) => (i === 1 ? { top: [{ token: " up", scalar: 2, normalizedScalar: 1 }], bottom: [] } : null)),
      },
      topOutputTokenLogits: {
        responseDataType: "multiple_top_k_derived_scalars_response_data",
        nodeIndices: [node("vocab_token", null, [-1, 11]), node("vocab_token", null, [-1, 12])],
        activationsByGroupId: { logits: [1 * scale, 3 * scale] },
        vocabTokenStringsForIndices: [" x", " y"],
        intermediateSumActivationsByDstByGroupId: {},
      },
    },
  };
}

describe("toTdbView", () => {
  it("reads the node table, logits and tokens of one sub-response", () => {
    const view = toTdbView({ inferenceSubResponses: [sub(1.25, 1)] } as BatchedResponse, false);
    expect(view.tokens).toEqual(["<|endoftext|>", " a", " b"]);
    expect(view.loss).toBe(1.25);
    expect(view.baselineLoss).toBeNull();
    expect(view.rows.map((r) => r.key)).toEqual(["attention_head:0:2,1,3", "mlp_neuron:1:2,7", "layer:-:0,0"]);
    expect(view.rows[1]?.values).toEqual({ activation: 1.5, writeNorm: 3, directEffect: 0.3, totalEffect: 0.6 });
    expect(view.rows[1]?.upvoted?.top[0]?.token).toBe(" up");
    expect(view.rows[0]?.upvoted).toBeNull();
    expect(view.rows.map((r) => r.kind)).toEqual(["attention", "mlp", "embedding"]);
    expect(view.logits.map((l) => l.token)).toEqual([" y", " x"]);
  });

  it("reads the traced node's value (activationValueForBackwardPass), ablated and not", () => {
    const traced = (value: number) => {
      const s = sub(1, 1);
      s.inferenceResponse.inferenceAndTokenData = { ...s.inferenceResponse.inferenceAndTokenData, loss: null, activationValueForBackwardPass: value };
      return s;
    };
    const view = toTdbView({ inferenceSubResponses: [traced(-0.75), traced(0.5)] } as BatchedResponse, true);
    expect(view.tracedValue).toBe(-0.75);
    expect(view.baselineTracedValue).toBe(0.5);
    expect(view.loss).toBeNull();
    expect(toTdbView({ inferenceSubResponses: [sub(1, 1)] } as BatchedResponse, false).tracedValue).toBeNull();
  });

  it("matches the unablated values to the same nodes, whatever their order", () => {
    const view = toTdbView({ inferenceSubResponses: [sub(1, 1), sub(2, 10, [2, 0, 1])] } as BatchedResponse, true);
    expect(view.baselineLoss).toBe(2);
    expect(view.rows[1]?.baseline?.writeNorm).toBeCloseTo(30);
    expect(view.rows[0]?.baseline?.totalEffect).toBeCloseTo(-2);
    expect(view.logits[0]).toEqual({ token: " y", logit: 3, baseline: 30 });
  });

  it("sums per token: attention by query (rows) and by key (columns)", () => {
    const [t0, t1, t2] = toTdbView({ inferenceSubResponses: [sub(1, 1)] } as BatchedResponse, false).tokenSums.totalEffect;
    expect(t0).toEqual({ index: 0, token: "<|endoftext|>", embedding: 0.1, mlp: 1, attention: 1, attentionFrom: 7 });
    expect(t1?.attention).toBe(5);
    expect(t2?.attention).toBe(15);
    expect(t2?.attentionFrom).toBe(6);
  });

  it("prefers the linear per-token steps of our server to the per-pair sums", () => {
    const s = sub(1, 1);
    const step = (sums: Record<string, { tensorType: "tensor_1d"; value: number[] }>) => ({
      responseDataType: "multiple_top_k_derived_scalars_response_data" as const,
      nodeIndices: [],
      activationsByGroupId: {},
      intermediateSumActivationsByDstByGroupId: { act_times_grad: sums },
    });
    s.processingResponseDataByName = {
      ...s.processingResponseDataByName,
      componentSumsByToken: step({
        token_attribution: { tensorType: "tensor_1d", value: [0.5, 0.6, 0.7] },
        mlp_act_times_grad: { tensorType: "tensor_1d", value: [10, 20, 30] },
        unflattened_attn_act_times_grad: { tensorType: "tensor_1d", value: [100, 200, 300] },
      }),
      componentSumsByAttendedToToken: step({
        unflattened_attn_act_times_grad: { tensorType: "tensor_1d", value: [-1, -2, -3] },
      }),
    };
    const [t0, , t2] = toTdbView({ inferenceSubResponses: [s] } as BatchedResponse, false).tokenSums.totalEffect;
    expect(t0).toEqual({ index: 0, token: "<|endoftext|>", embedding: 0.5, mlp: 10, attention: 100, attentionFrom: -1 });
    expect(t2?.attentionFrom).toBe(-3);
  });

  it("takes exact per-layer sums from componentSumsForLayerDisplay, and counts the table's nodes", () => {
    const s = sub(1, 1);
    s.processingResponseDataByName = {
      ...s.processingResponseDataByName,
      componentSumsForLayerDisplay: {
        responseDataType: "multiple_top_k_derived_scalars_response_data",
        nodeIndices: [],
        activationsByGroupId: {},
        intermediateSumActivationsByDstByGroupId: {
          act_times_grad: {
            token_attribution: { tensorType: "tensor_1d", value: [0.5] },
            mlp_act_times_grad: { tensorType: "tensor_1d", value: [1, 2] },
            unflattened_attn_act_times_grad: { tensorType: "tensor_1d", value: [3, 4] },
          },
          direction_write: {
            resid_post_embedding_proj_to_final_residual_grad: { tensorType: "tensor_1d", value: [0.25] },
            mlp_write_to_final_residual_grad: { tensorType: "tensor_1d", value: [-1, -2] },
            unflattened_attn_write_to_final_residual_grad: { tensorType: "tensor_1d", value: [-3, -4] },
          },
        },
      },
    };
    const view = toTdbView({ inferenceSubResponses: [s] } as BatchedResponse, false);
    expect(view.layerSumsExact).toBe(true);
    expect(view.layerSums.map((r) => [r.layer, r.kind, r.count, r.totalEffect, r.directEffect])).toEqual([
      [null, "embedding", 1, 0.5, 0.25],
      [0, "attention", 1, 3, -3],
      [0, "mlp", 0, 1, -1],
      [1, "attention", 0, 4, -4],
      [1, "mlp", 1, 2, -2],
    ]);
  });

  it("without that step, sums the table's nodes per layer and kind, embeddings first", () => {
    const sums = toTdbView({ inferenceSubResponses: [sub(1, 1)] } as BatchedResponse, false).layerSums;
    expect(sums.map((s) => [s.layer, s.kind, s.count])).toEqual([
      [null, "embedding", 1],
      [0, "attention", 1],
      [1, "mlp", 1],
    ]);
    expect(sums[2]?.totalEffect).toBeCloseTo(0.6);
  });
});
