import { describe, expect, it } from "vitest";
import { DEFAULT_STATE, toggleAblation, traceUpstream } from "./debuggerState";
import type { NodeRef } from "./nodes";
import { buildTdbRequest } from "./tdbRequest";

const head: NodeRef = { nodeType: "attention_head", layerIndex: 0, tensorIndices: [14, 6, 2] };

describe("buildTdbRequest", () => {
  it("sends one sub-request shaped like the original client's", () => {
    expect(buildTdbRequest(DEFAULT_STATE)).toEqual({
      subRequests: [
        {
          prompt: DEFAULT_STATE.prompt,
          targetTokens: [" Mary"],
          distractorTokens: [" John"],
          componentTypeForMlp: "neuron",
          componentTypeForAttention: "attention_head",
          topAndBottomKForNodeTable: 10,
          hideEarlyLayersWhenAblating: true,
          nodeAblations: [],
        },
      ],
    });
  });

  it("sends the ablated prompt first and the unablated one second", () => {
    const { subRequests } = buildTdbRequest(toggleAblation(DEFAULT_STATE, head));
    expect(subRequests).toHaveLength(2);
    expect(subRequests[0]?.nodeAblations).toEqual([
      { nodeIndex: { nodeType: "attention_head", tensorIndices: [14, 6, 2], layerIndex: 0, passType: "forward" }, value: 0 },
    ]);
    expect(subRequests[1]).toEqual({ ...subRequests[0], nodeAblations: [] });
  });

  it("traces a head through the chosen part, in both sub-requests", () => {
    const state = traceUpstream(toggleAblation(DEFAULT_STATE, head), head, "V");
    const { subRequests } = buildTdbRequest(state);
    for (const sub of subRequests) {
      expect(sub.upstreamNodeToTrace).toEqual({
        nodeIndex: { nodeType: "attention_head", tensorIndices: [14, 6, 2], layerIndex: 0, passType: "forward" },
        attentionTraceType: "V",
      });
    }
  });

  it("sends the downstream node of a trace through V", () => {
    const neuron: NodeRef = { nodeType: "mlp_neuron", layerIndex: 1, tensorIndices: [14, 4] };
    const [sub] = buildTdbRequest(traceUpstream(traceUpstream(DEFAULT_STATE, neuron), head, "V")).subRequests;
    expect(sub?.upstreamNodeToTrace?.attentionTraceType).toBe("V");
    expect(sub?.downstreamNodeToTrace).toEqual({ nodeIndex: { nodeType: "mlp_neuron", tensorIndices: [14, 4], layerIndex: 1, passType: "forward" } });
  });

  it("traces a neuron without a trace type", () => {
    const neuron: NodeRef = { nodeType: "mlp_neuron", layerIndex: 1, tensorIndices: [3, 4] };
    const [sub] = buildTdbRequest(traceUpstream(DEFAULT_STATE, neuron)).subRequests;
    expect(sub?.upstreamNodeToTrace).toEqual({ nodeIndex: { nodeType: "mlp_neuron", tensorIndices: [3, 4], layerIndex: 1, passType: "forward" } });
  });

  it("asks for transcoder latents for the MLPs and for residual-stream latents only when toggled on", () => {
    const [spec] = buildTdbRequest({ ...DEFAULT_STATE, mlp: "transcoder_latent", residual: true }).subRequests;
    expect(spec?.componentTypeForMlp).toBe("transcoder_latent");
    expect(spec?.includeResidualLatents).toBe(true);
    expect(buildTdbRequest(DEFAULT_STATE).subRequests[0]).not.toHaveProperty("includeResidualLatents");
  });
});
