import { describe, expect, it } from "vitest";
import {
  DEFAULT_STATE,
  nextSort,
  parseDebuggerState,
  parseTokenList,
  formatTokenList,
  requestKey,
  serializeDebuggerState,
  stopTracing,
  swapTargetAndDistractor,
  toggleAblation,
  traceUpstream,
  type DebuggerState,
} from "./debuggerState";
import type { NodeRef } from "./nodes";

const head: NodeRef = { nodeType: "attention_head", layerIndex: 0, tensorIndices: [14, 6, 2] };
const neuron: NodeRef = { nodeType: "mlp_neuron", layerIndex: 1, tensorIndices: [14, 203] };

const full: DebuggerState = {
  prompt: "<|endoftext|>When Mary and John went to the store, John gave a drink to",
  targets: [" Mary", " Marie"],
  distractors: [" John"],
  mlp: "autoencoder_latent",
  attn: "autoencoder_latent",
  residual: true,
  k: 30,
  ablations: [
    { node: head, value: 0 },
    { node: neuron, value: 0.5 },
  ],
  trace: { node: head, attentionTraceType: "V" },
  sort: { key: "layer", dir: "asc" },
  filter: "attention",
};

describe("URL <-> state", () => {
  it("gives the defaults for an empty query", () => {
    expect(parseDebuggerState("")).toEqual(DEFAULT_STATE);
  });

  it("round-trips every field", () => {
    expect(parseDebuggerState(serializeDebuggerState(full))).toEqual(full);
  });

  it("round-trips prompts with special characters, newlines and spaces", () => {
    const state = { ...DEFAULT_STATE, prompt: "a & b = c?\n  d #e %20 +f", targets: [" &"], distractors: ["+", " ,"] };
    expect(parseDebuggerState(serializeDebuggerState(state))).toEqual(state);
  });

  it("writes the prompt and tokens, and leaves other defaults out", () => {
    const q = new URLSearchParams(serializeDebuggerState(DEFAULT_STATE));
    expect([...q.keys()]).toEqual(["prompt", "target", "distractor"]);
    expect(q.get("target")).toBe(" Mary");
  });

  it("encodes ablations and traces as readable node keys", () => {
    const q = new URLSearchParams(serializeDebuggerState(full));
    expect(q.getAll("ablate")).toEqual(["attention_head:0:14,6,2", "mlp_neuron:1:14,203=0.5"]);
    expect(q.get("trace")).toBe("attention_head:0:14,6,2");
    expect(q.get("traceType")).toBe("V");
  });

  it("ignores invalid values instead of failing", () => {
    const s = parseDebuggerState("?mlp=bogus&k=-3&sort=nope&dir=sideways&show=x&ablate=garbage&ablate=mlp_neuron:1:2,3=abc&trace=zzz");
    expect(s.mlp).toBe("neuron");
    expect(s.k).toBe(DEFAULT_STATE.k);
    expect(s.sort).toEqual(DEFAULT_STATE.sort);
    expect(s.filter).toBe("all");
    expect(s.ablations).toEqual([]);
    expect(s.trace).toBeNull();
  });

  it("drops duplicate ablations and caps k", () => {
    const s = parseDebuggerState("?ablate=mlp_neuron:1:2,3&ablate=mlp_neuron:1:2,3&k=100000");
    expect(s.ablations).toHaveLength(1);
    expect(s.k).toBe(200);
  });

  it("defaults a head's trace type to QK and gives other nodes none", () => {
    expect(parseDebuggerState("?trace=attention_head:0:1,0,2").trace?.attentionTraceType).toBe("QK");
    expect(parseDebuggerState("?trace=mlp_neuron:0:1,2&traceType=Q").trace?.attentionTraceType).toBeNull();
  });

  it("keeps an explicitly empty token list empty", () => {
    expect(parseDebuggerState("?target=&distractor=%20John").targets).toEqual([]);
  });
});

describe("transitions", () => {
  it("ablates and un-ablates a node", () => {
    const once = toggleAblation(DEFAULT_STATE, head);
    expect(once.ablations).toEqual([{ node: head, value: 0 }]);
    expect(toggleAblation(once, { ...head, tensorIndices: [14, 6, 2] }).ablations).toEqual([]);
  });

  it("traces and stops tracing", () => {
    const traced = traceUpstream(DEFAULT_STATE, head, "K");
    expect(traced.trace).toEqual({ node: head, attentionTraceType: "K" });
    expect(traceUpstream(DEFAULT_STATE, neuron, "K").trace?.attentionTraceType).toBeNull();
    expect(stopTracing(traced).trace).toBeNull();
  });

  it("tracing a head through V keeps the traced node as the downstream one", () => {
    const earlierHead: NodeRef = { nodeType: "attention_head", layerIndex: 0, tensorIndices: [10, 3, 1] };
    const laterHead: NodeRef = { nodeType: "attention_head", layerIndex: 2, tensorIndices: [14, 10, 4] };
    const fromNeuron = traceUpstream(traceUpstream(DEFAULT_STATE, neuron), earlierHead, "V");
    expect(fromNeuron.trace).toEqual({ node: earlierHead, attentionTraceType: "V", downstream: { node: neuron, attentionTraceType: null } });
    const fromHead = traceUpstream(traceUpstream(DEFAULT_STATE, laterHead, "K"), earlierHead, "V");
    expect(fromHead.trace?.downstream).toEqual({ node: laterHead, attentionTraceType: "K" });
    // switching the V-traced head keeps the downstream node; Q/K traces and fresh V traces have none
    expect(traceUpstream(fromHead, head, "V").trace?.downstream).toEqual({ node: laterHead, attentionTraceType: "K" });
    expect(traceUpstream(fromHead, earlierHead, "Q").trace?.downstream).toBeUndefined();
    expect(traceUpstream(DEFAULT_STATE, earlierHead, "V").trace?.downstream).toBeUndefined();
    // and it round-trips through the URL
    expect(parseDebuggerState(serializeDebuggerState(fromHead)).trace).toEqual(fromHead.trace);
  });

  it("swaps target and distractor", () => {
    const swapped = swapTargetAndDistractor(full);
    expect(swapped.targets).toEqual([" John"]);
    expect(swapped.distractors).toEqual([" Mary", " Marie"]);
  });

  it("cycles the sort of a column: magnitude, descending, ascending", () => {
    let sort = nextSort(DEFAULT_STATE.sort, "writeNorm");
    expect(sort).toEqual({ key: "writeNorm", dir: "abs" });
    sort = nextSort(sort, "writeNorm");
    expect(sort.dir).toBe("desc");
    sort = nextSort(sort, "writeNorm");
    expect(sort.dir).toBe("asc");
    expect(nextSort(sort, "writeNorm").dir).toBe("abs");
    expect(nextSort(sort, "layer")).toEqual({ key: "layer", dir: "asc" });
  });

  it("does not ask the server again for a new sort or filter", () => {
    const resorted = { ...full, sort: { key: "activation", dir: "desc" } as const, filter: "mlp" as const };
    expect(requestKey(resorted)).toBe(requestKey(full));
    expect(requestKey({ ...full, k: 10 })).not.toBe(requestKey(full));
  });
});

describe("token list inputs", () => {
  it("splits on commas and keeps leading spaces", () => {
    expect(parseTokenList(" Mary, Marie")).toEqual([" Mary", " Marie"]);
    expect(parseTokenList(" Mary,,  ")).toEqual([" Mary"]);
    expect(parseTokenList(formatTokenList([" a", "b"]))).toEqual([" a", "b"]);
  });
});

describe("transcoder and residual-stream latents in the URL", () => {
  const transcoder: NodeRef = { nodeType: "transcoder_latent", layerIndex: 2, tensorIndices: [7, 411] };
  const residual: NodeRef = { nodeType: "residual_autoencoder_latent", layerIndex: 3, tensorIndices: [5, 12] };

  it("round-trips transcoder latents for MLPs, the residual toggle, and their ablations and traces", () => {
    const state: DebuggerState = {
      ...DEFAULT_STATE,
      mlp: "transcoder_latent",
      residual: true,
      ablations: [{ node: transcoder, value: 0 }],
      trace: { node: residual, attentionTraceType: null },
      filter: "residual",
    };
    const search = serializeDebuggerState(state);
    const q = new URLSearchParams(search);
    expect(q.get("mlp")).toBe("transcoder_latent");
    expect(q.get("resid")).toBe("1");
    expect(q.getAll("ablate")).toEqual(["transcoder_latent:2:7,411"]);
    expect(q.get("trace")).toBe("residual_autoencoder_latent:3:5,12");
    expect(parseDebuggerState(search)).toEqual(state);
  });

  it("leaves the residual toggle out when off, and ignores other values", () => {
    expect(new URLSearchParams(serializeDebuggerState(DEFAULT_STATE)).has("resid")).toBe(false);
    expect(parseDebuggerState("?resid=yes").residual).toBe(false);
    expect(parseDebuggerState("?mlp=bogus").mlp).toBe("neuron");
  });

  it("round-trips no distractor (the target's logit alone) as an empty one", () => {
    const state = { ...DEFAULT_STATE, distractors: [] };
    expect(new URLSearchParams(serializeDebuggerState(state)).getAll("distractor")).toEqual([""]);
    expect(parseDebuggerState(serializeDebuggerState(state)).distractors).toEqual([]);
  });
});
