import { describe, expect, it } from "vitest";
import { matchRoute } from "../router";
import { parseDebuggerState } from "../state/debuggerState";
import type { GraphFile, GraphNode } from "./graphFile";
import { ablateInDebuggerPath, debuggerPrompt, graphLinkFor, graphNodePagePath } from "./graphLinks";
import { parseGraphState } from "./graphState";

const feature: GraphNode = { node_id: "2_131_4", feature: 0, layer: "2", ctx_idx: 4, feature_type: "cross layer transcoder", jsNodeId: "2_131-0", latent_index: 131 };
const embedding: GraphNode = { node_id: "E_7_0", feature: 0, layer: "E", ctx_idx: 0, feature_type: "embedding", jsNodeId: "E_7-0" };
const logit: GraphNode = { node_id: "5_1250_4", feature: 1250, layer: "5", ctx_idx: 4, feature_type: "logit", jsNodeId: "L_1250-4", token: " Mary", token_prob: 0.9, is_target_logit: true };
const graph = {
  metadata: { slug: "g", scan: "demo", prompt: "When Mary went to", prompt_tokens: ["<|endoftext|>", "When", " Mary", " went", " to"] },
  qParams: {},
  nodes: [feature, embedding, logit],
  links: [],
} as unknown as GraphFile;

describe("graph node links", () => {
  it("writes the start token the server put first into the debugger's prompt", () => {
    expect(debuggerPrompt(graph.metadata)).toBe("<|endoftext|>When Mary went to");
    expect(debuggerPrompt({ prompt: "<|endoftext|>a", prompt_tokens: ["<|endoftext|>", "a"] })).toBe("<|endoftext|>a");
  });

  it("opens a feature's transcoder latent page, and nothing for embeddings", () => {
    const path = graphNodePagePath("demo", graph, feature) ?? "";
    expect(matchRoute(path.split("?")[0] ?? "")).toEqual({ page: "node", model: "demo", nodeType: "transcoder_latent", layer: 2, index: 131 });
    expect(graphNodePagePath("demo", graph, embedding)).toBeNull();
  });

  it("ablates the feature in the debugger: that latent at that token, to 0, transcoders for the MLPs", () => {
    const path = ablateInDebuggerPath("demo", graph, feature) ?? "";
    expect(path.startsWith("/demo/tdb?")).toBe(true);
    const state = parseDebuggerState(path.slice(path.indexOf("?")));
    expect(state.mlp).toBe("transcoder_latent");
    expect(state.ablations).toEqual([{ node: { nodeType: "transcoder_latent", layerIndex: 2, tensorIndices: [4, 131] }, value: 0 }]);
    expect(state.prompt).toBe("<|endoftext|>When Mary went to");
    // the graph's top logit against nothing, unless the graph was asked for a logit difference
    expect(state.targets).toEqual([" Mary"]);
    expect(state.distractors).toEqual([]);
    const asked = parseDebuggerState((ablateInDebuggerPath("demo", graph, feature, { targets: [" Mary"], distractors: [" John"] }) ?? "").split("?")[1] ?? "");
    expect(asked.distractors).toEqual([" John"]);
    expect(ablateInDebuggerPath("demo", graph, logit)).toBeNull();
  });

  it("links the debugger's prompt, target and distractor to the graph page", () => {
    const request = parseGraphState(graphLinkFor({ prompt: "a b", targets: [" c"], distractors: [" d"] })).request;
    expect(request).toMatchObject({ prompt: "a b", targets: [" c"], distractors: [" d"] });
  });
});
