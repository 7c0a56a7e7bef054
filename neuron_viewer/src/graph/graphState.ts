// The graph page's state, all in the query string: the request (so a link re-creates the graph)
// and the view (prune sliders, pinned nodes, supernodes). Defaults are left out of the URL.
import type { components } from "../client/schema";
import { DEFAULT_THRESHOLDS, type PruneThresholds } from "./prune";

export type AttributionGraphRequest = components["schemas"]["AttributionGraphRequest"];

export interface GraphRequestParams {
  prompt: string;
  /** None: the top logits; with distractors, the logit difference (as in the debugger). */
  targets: string[];
  distractors: string[];
  maxFeatureNodes: number;
  /** What the server prunes to before answering: looser than the sliders' defaults, so the
   * sliders have room both ways without another request. */
  serverThresholds: PruneThresholds;
}

export interface Supernode {
  name: string;
  members: string[];
}

export interface GraphViewState {
  thresholds: PruneThresholds;
  pinned: string[];
  supernodes: Supernode[];
}

export interface GraphPageState {
  /** Null: no prompt yet (a loaded file, or the empty form). */
  request: GraphRequestParams | null;
  view: GraphViewState;
}

export const DEFAULT_REQUEST: Omit<GraphRequestParams, "prompt"> = {
  targets: [],
  distractors: [],
  maxFeatureNodes: 7500,
  serverThresholds: { node: 0.9, edge: 0.99 },
};

export const DEFAULT_VIEW: GraphViewState = { thresholds: DEFAULT_THRESHOLDS, pinned: [], supernodes: [] };

function fraction(value: string | null, fallback: number): number {
  const x = value === null ? NaN : Number(value);
  return Number.isFinite(x) && x >= 0 && x <= 1 ? x : fallback;
}

/** `name:id,id` (node ids have no colon; a name may, so the last colon splits). */
function parseSupernode(s: string): Supernode | null {
  const colon = s.lastIndexOf(":");
  if (colon <= 0) return null;
  const members = s.slice(colon + 1).split(",").filter(Boolean);
  return members.length > 0 ? { name: s.slice(0, colon), members } : null;
}

export function parseGraphState(search: string): GraphPageState {
  const q = new URLSearchParams(search);
  const prompt = q.get("prompt");
  const max = Number(q.get("maxFeatures"));
  const request: GraphRequestParams | null = prompt
    ? {
        prompt,
        targets: q.getAll("target").filter(Boolean),
        distractors: q.getAll("distractor").filter(Boolean),
        maxFeatureNodes: Number.isInteger(max) && max >= 1 ? max : DEFAULT_REQUEST.maxFeatureNodes,
        serverThresholds: {
          node: fraction(q.get("serverNode"), DEFAULT_REQUEST.serverThresholds.node),
          edge: fraction(q.get("serverEdge"), DEFAULT_REQUEST.serverThresholds.edge),
        },
      }
    : null;
  return {
    request,
    view: {
      thresholds: { node: fraction(q.get("node"), DEFAULT_THRESHOLDS.node), edge: fraction(q.get("edge"), DEFAULT_THRESHOLDS.edge) },
      pinned: [...new Set(q.getAll("pin").filter(Boolean))],
      supernodes: q.getAll("group").map(parseSupernode).filter((g): g is Supernode => g !== null),
    },
  };
}

export function serializeGraphState(state: GraphPageState): string {
  const q = new URLSearchParams();
  const r = state.request;
  if (r) {
    q.set("prompt", r.prompt);
    r.targets.forEach((t) => q.append("target", t));
    r.distractors.forEach((t) => q.append("distractor", t));
    if (r.maxFeatureNodes !== DEFAULT_REQUEST.maxFeatureNodes) q.set("maxFeatures", String(r.maxFeatureNodes));
    if (r.serverThresholds.node !== DEFAULT_REQUEST.serverThresholds.node) q.set("serverNode", String(r.serverThresholds.node));
    if (r.serverThresholds.edge !== DEFAULT_REQUEST.serverThresholds.edge) q.set("serverEdge", String(r.serverThresholds.edge));
  }
  const v = state.view;
  if (v.thresholds.node !== DEFAULT_THRESHOLDS.node) q.set("node", String(v.thresholds.node));
  if (v.thresholds.edge !== DEFAULT_THRESHOLDS.edge) q.set("edge", String(v.thresholds.edge));
  v.pinned.forEach((id) => q.append("pin", id));
  v.supernodes.forEach((g) => q.append("group", `${g.name}:${g.members.join(",")}`));
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** The /attribution_graph body. A distractor needs a target (the server says so otherwise). */
export function buildGraphRequest(r: GraphRequestParams): AttributionGraphRequest {
  return {
    prompt: r.prompt,
    ...(r.targets.length > 0 ? { targetTokens: r.targets } : {}),
    ...(r.distractors.length > 0 ? { distractorTokens: r.distractors } : {}),
    maxFeatureNodes: r.maxFeatureNodes,
    nodeThreshold: r.serverThresholds.node,
    edgeThreshold: r.serverThresholds.edge,
  };
}

/** Whether two states ask the server the same (the view is client-side). */
export function graphRequestKey(r: GraphRequestParams | null): string | null {
  return r ? JSON.stringify(buildGraphRequest(r)) : null;
}

// ---------------------------------------------------------------- pins and supernodes

export function togglePin(view: GraphViewState, id: string): GraphViewState {
  const pinned = view.pinned.includes(id) ? view.pinned.filter((p) => p !== id) : [...view.pinned, id];
  return { ...view, pinned };
}

/** Groups pinned nodes into a supernode (a node is in one supernode at most: it leaves others). */
export function groupNodes(view: GraphViewState, name: string, members: readonly string[]): GraphViewState {
  const chosen = new Set(members);
  if (chosen.size === 0 || !name.trim()) return view;
  const others = view.supernodes
    .map((g) => ({ ...g, members: g.members.filter((m) => !chosen.has(m)) }))
    .filter((g) => g.members.length > 0 && g.name !== name.trim());
  return { ...view, supernodes: [...others, { name: name.trim(), members: [...chosen] }] };
}

export function ungroup(view: GraphViewState, name: string): GraphViewState {
  return { ...view, supernodes: view.supernodes.filter((g) => g.name !== name) };
}

/** Pins and supernodes a file brings in its qParams (Neuronpedia's: supernodes as [name, ...ids]). */
export function viewFromQParams(qParams: { pinnedIds?: string[]; supernodes?: string[][] } | undefined, view: GraphViewState): GraphViewState {
  if (!qParams || view.pinned.length > 0 || view.supernodes.length > 0) return view;
  const supernodes = (qParams.supernodes ?? [])
    .map(([name, ...members]) => ({ name: name ?? "", members }))
    .filter((g) => g.name && g.members.length > 0);
  return { ...view, pinned: [...(qParams.pinnedIds ?? [])], supernodes };
}
