import { describe, expect, it } from "vitest";
import { debuggerPath, graphPath, matchRoute, nodePagePath } from "./router";

describe("matchRoute", () => {
  it("finds the three pages", () => {
    expect(matchRoute("/")).toEqual({ page: "welcome" });
    expect(matchRoute("/gpt2-small/tdb")).toEqual({ page: "debugger", model: "gpt2-small" });
    expect(matchRoute("/gpt2-small/tdb_alpha/")).toEqual({ page: "debugger", model: "gpt2-small" });
    expect(matchRoute("/gpt2-small/mlp_neuron/5/131")).toEqual({ page: "node", model: "gpt2-small", nodeType: "mlp_neuron", layer: 5, index: 131 });
    expect(matchRoute("/m_ae1_ae2/attention_autoencoder_latent/0/7")).toMatchObject({ page: "node", nodeType: "attention_autoencoder_latent" });
    // the original client's page of an attention latent by token pair
    expect(matchRoute("/m_ae1_ae2/autoencoder_latent_by_token_pair/2/17")).toEqual({
      page: "node", model: "m_ae1_ae2", nodeType: "autoencoder_latent_by_token_pair", layer: 2, index: 17,
    });
  });

  it("finds the node pages of residual-stream SAE latents and transcoder latents", () => {
    expect(matchRoute("/demo/residual_autoencoder_latent/1/3")).toEqual({
      page: "node", model: "demo", nodeType: "residual_autoencoder_latent", layer: 1, index: 3,
    });
    expect(matchRoute(nodePagePath("demo", "transcoder_latent", 2, 40))).toEqual({
      page: "node", model: "demo", nodeType: "transcoder_latent", layer: 2, index: 40,
    });
  });

  it("finds the graph page", () => {
    expect(matchRoute("/demo/graph")).toEqual({ page: "graph", model: "demo" });
    expect(graphPath("my model", "prompt=a")).toBe("/my%20model/graph?prompt=a");
  });

  it("says not found for anything else", () => {
    for (const path of ["/x", "/m/tdb/extra", "/m/bogus_type/1/2", "/m/mlp_neuron/-1/2", "/m/mlp_neuron/1/2.5", "/m/mlp_neuron/1"]) {
      expect(matchRoute(path).page).toBe("notFound");
    }
  });

  it("round-trips with the path builders, model names escaped", () => {
    expect(matchRoute(debuggerPath("my model"))).toEqual({ page: "debugger", model: "my model" });
    expect(nodePagePath("m", "attention_head", 1, 2, "prompt=a")).toBe("/m/attention_head/1/2?prompt=a");
    expect(debuggerPath("m", "?k=3")).toBe("/m/tdb?k=3");
  });
});
