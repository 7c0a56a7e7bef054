import { describe, expect, it } from "vitest";
import {
  buildGraphRequest,
  DEFAULT_REQUEST,
  DEFAULT_VIEW,
  groupNodes,
  parseGraphState,
  serializeGraphState,
  togglePin,
  ungroup,
  viewFromQParams,
  type GraphPageState,
} from "./graphState";

const full: GraphPageState = {
  request: { prompt: "When Mary and John went, John gave a drink to", targets: [" Mary"], distractors: [" John"], maxFeatureNodes: 500, serverThresholds: { node: 0.95, edge: 0.995 } },
  view: { thresholds: { node: 0.5, edge: 0.9 }, pinned: ["0_5_1", "E_10_0"], supernodes: [{ name: "say: Mary", members: ["0_5_1", "1_-1_2"] }] },
};

describe("graph URL <-> state", () => {
  it("round-trips every field (a supernode's name may hold a colon)", () => {
    expect(parseGraphState(serializeGraphState(full))).toEqual(full);
  });

  it("writes only the prompt for the defaults, and nothing without a prompt", () => {
    const q = new URLSearchParams(serializeGraphState({ request: { ...DEFAULT_REQUEST, prompt: "hi" }, view: DEFAULT_VIEW }));
    expect([...q.keys()]).toEqual(["prompt"]);
    expect(serializeGraphState({ request: null, view: DEFAULT_VIEW })).toBe("");
    expect(parseGraphState("")).toEqual({ request: null, view: DEFAULT_VIEW });
  });

  it("falls back to defaults for values out of range", () => {
    const state = parseGraphState("?prompt=a&node=2&edge=-1&serverNode=x&maxFeatures=0&group=nocolon&group=:a");
    expect(state.view.thresholds).toEqual(DEFAULT_VIEW.thresholds);
    expect(state.request?.serverThresholds).toEqual(DEFAULT_REQUEST.serverThresholds);
    expect(state.request?.maxFeatureNodes).toBe(DEFAULT_REQUEST.maxFeatureNodes);
    expect(state.view.supernodes).toEqual([]);
  });
});

describe("graph request", () => {
  it("asks for the top logits without targets, the logit difference with both", () => {
    const top = buildGraphRequest({ ...DEFAULT_REQUEST, prompt: "a" });
    expect(top).not.toHaveProperty("targetTokens");
    expect(top).not.toHaveProperty("distractorTokens");
    expect(top).toMatchObject({ nodeThreshold: 0.9, edgeThreshold: 0.99, maxFeatureNodes: 7500 });
    expect(buildGraphRequest(full.request as NonNullable<GraphPageState["request"]>)).toMatchObject({ targetTokens: [" Mary"], distractorTokens: [" John"] });
  });
});

describe("pins and supernodes", () => {
  it("toggles pins", () => {
    expect(togglePin(togglePin(DEFAULT_VIEW, "a"), "b").pinned).toEqual(["a", "b"]);
    expect(togglePin({ ...DEFAULT_VIEW, pinned: ["a", "b"] }, "a").pinned).toEqual(["b"]);
  });

  it("groups nodes: a node leaves its old supernode, an emptied one goes, a name is replaced", () => {
    let view = groupNodes(DEFAULT_VIEW, "first", ["a", "b"]);
    view = groupNodes(view, "second", ["b", "c"]);
    expect(view.supernodes).toEqual([{ name: "first", members: ["a"] }, { name: "second", members: ["b", "c"] }]);
    view = groupNodes(view, "third", ["a"]);
    expect(view.supernodes.map((g) => g.name)).toEqual(["second", "third"]);
    expect(groupNodes(view, "  ", ["x"])).toBe(view);
    expect(ungroup(view, "second").supernodes.map((g) => g.name)).toEqual(["third"]);
  });

  it("takes a file's pins and Neuronpedia supernodes when the URL has none", () => {
    const qParams = { pinnedIds: ["a", "b"], supernodes: [["group", "a", "b"], ["empty"]] };
    expect(viewFromQParams(qParams, DEFAULT_VIEW)).toMatchObject({ pinned: ["a", "b"], supernodes: [{ name: "group", members: ["a", "b"] }] });
    const mine = { ...DEFAULT_VIEW, pinned: ["z"] };
    expect(viewFromQParams(qParams, mine)).toBe(mine);
  });
});
