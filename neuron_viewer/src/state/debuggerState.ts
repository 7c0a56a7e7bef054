// Everything the debugger page shows is a function of this state, and this state lives in the
// query string: a URL reproduces the view. Defaults are left out of the URL, except the prompt
// and the target / distractor tokens, which are always written.
import type { AttentionTraceType, ComponentTypeForAttention, ComponentTypeForMlp } from "../api/types";
import { nodeKey, parseNodeKey, sameNode, type NodeRef } from "./nodes";

export type SortKey = "activation" | "writeNorm" | "directEffect" | "totalEffect" | "layer";
/** desc: largest first; asc: smallest first; abs: largest magnitude first. */
export type SortDir = "desc" | "asc" | "abs";
export type KindFilter = "all" | "mlp" | "attention" | "residual" | "embedding";

export interface Ablation {
  node: NodeRef;
  value: number;
}

export interface TracedNode {
  node: NodeRef;
  /** Attention heads only: through the query, the key, both, or the value. */
  attentionTraceType: AttentionTraceType | null;
}

export interface Trace extends TracedNode {
  /** Through V only: the node whose gradient the head's write is projected on (else the loss). */
  downstream?: TracedNode | null;
}

export interface DebuggerState {
  prompt: string;
  targets: string[];
  distractors: string[];
  mlp: ComponentTypeForMlp;
  attn: ComponentTypeForAttention;
  /** Also list the residual-stream SAEs' latents (the server's `includeResidualLatents`). */
  residual: boolean;
  /** Top and bottom k nodes per node-table column. */
  k: number;
  ablations: Ablation[];
  trace: Trace | null;
  sort: { key: SortKey; dir: SortDir };
  filter: KindFilter;
}

export const EXAMPLE_PROMPT = "<|endoftext|>When Mary and John went to the store, John gave a drink to";

export const DEFAULT_STATE: DebuggerState = {
  prompt: EXAMPLE_PROMPT,
  targets: [" Mary"],
  distractors: [" John"],
  mlp: "neuron",
  attn: "attention_head",
  residual: false,
  k: 10,
  ablations: [],
  trace: null,
  sort: { key: "totalEffect", dir: "abs" },
  filter: "all",
};

const SORT_KEYS: SortKey[] = ["activation", "writeNorm", "directEffect", "totalEffect", "layer"];
const SORT_DIRS: SortDir[] = ["desc", "asc", "abs"];
const FILTERS: KindFilter[] = ["all", "mlp", "attention", "residual", "embedding"];
const MLP_TYPES: ComponentTypeForMlp[] = ["neuron", "autoencoder_latent", "transcoder_latent"];
const TRACE_TYPES: AttentionTraceType[] = ["Q", "K", "QK", "V"];
const MAX_K = 200;

function oneOf<T extends string>(value: string | null, allowed: readonly T[], fallback: T): T {
  return value !== null && (allowed as readonly string[]).includes(value) ? (value as T) : fallback;
}

/** `attention_head:0:14,6,2` or `attention_head:0:14,6,2=0.5` (the value an ablation sets). */
function parseAblation(s: string): Ablation | null {
  const eq = s.lastIndexOf("=");
  const node = parseNodeKey(eq >= 0 ? s.slice(0, eq) : s);
  const value = eq >= 0 ? Number(s.slice(eq + 1)) : 0;
  return node && Number.isFinite(value) ? { node, value } : null;
}

function formatAblation(a: Ablation): string {
  return a.value === 0 ? nodeKey(a.node) : `${nodeKey(a.node)}=${a.value}`;
}

export function parseDebuggerState(search: string): DebuggerState {
  const q = new URLSearchParams(search);
  const list = (name: string, fallback: string[]) => (q.has(name) ? q.getAll(name).filter((t) => t !== "") : fallback);
  const k = Number(q.get("k"));
  const traceNode = parseNodeKey(q.get("trace") ?? "");
  const ablations: Ablation[] = [];
  for (const a of q.getAll("ablate").map(parseAblation)) {
    if (a && !ablations.some((b) => sameNode(a.node, b.node))) ablations.push(a);
  }
  return {
    prompt: q.get("prompt") ?? DEFAULT_STATE.prompt,
    targets: list("target", DEFAULT_STATE.targets),
    distractors: list("distractor", DEFAULT_STATE.distractors),
    mlp: oneOf(q.get("mlp"), MLP_TYPES, DEFAULT_STATE.mlp),
    attn: oneOf(q.get("attn"), ["attention_head", "autoencoder_latent"], DEFAULT_STATE.attn),
    residual: q.get("resid") === "1",
    k: Number.isInteger(k) && k >= 1 ? Math.min(k, MAX_K) : DEFAULT_STATE.k,
    ablations,
    trace: traceNode ? parseTrace(traceNode, q) : null,
    sort: {
      key: oneOf(q.get("sort"), SORT_KEYS, DEFAULT_STATE.sort.key),
      dir: oneOf(q.get("dir"), SORT_DIRS, DEFAULT_STATE.sort.dir),
    },
    filter: oneOf(q.get("show"), FILTERS, DEFAULT_STATE.filter),
  };
}

function parseTrace(node: NodeRef, q: URLSearchParams): Trace {
  const attentionTraceType = node.nodeType === "attention_head" ? oneOf(q.get("traceType"), TRACE_TYPES, "QK") : null;
  const down = attentionTraceType === "V" ? parseNodeKey(q.get("downstream") ?? "") : null;
  // a downstream node is traced through Q, K or QK (a head) or not at all (a neuron, a latent)
  const downType = down?.nodeType === "attention_head" ? oneOf(q.get("downstreamType"), ["Q", "K", "QK"] as const, "QK") : null;
  return { node, attentionTraceType, ...(down ? { downstream: { node: down, attentionTraceType: downType } } : {}) };
}

export function serializeDebuggerState(state: DebuggerState): string {
  const q = new URLSearchParams();
  q.set("prompt", state.prompt);
  state.targets.forEach((t) => q.append("target", t));
  state.distractors.forEach((t) => q.append("distractor", t));
  // no distractor (the target's logit alone) is written as an empty one: absent means the default
  if (state.distractors.length === 0) q.set("distractor", "");
  if (state.mlp !== DEFAULT_STATE.mlp) q.set("mlp", state.mlp);
  if (state.attn !== DEFAULT_STATE.attn) q.set("attn", state.attn);
  if (state.residual) q.set("resid", "1");
  if (state.k !== DEFAULT_STATE.k) q.set("k", String(state.k));
  state.ablations.forEach((a) => q.append("ablate", formatAblation(a)));
  if (state.trace) {
    q.set("trace", nodeKey(state.trace.node));
    if (state.trace.attentionTraceType) q.set("traceType", state.trace.attentionTraceType);
    const down = state.trace.downstream;
    if (down) {
      q.set("downstream", nodeKey(down.node));
      if (down.attentionTraceType) q.set("downstreamType", down.attentionTraceType);
    }
  }
  if (state.sort.key !== DEFAULT_STATE.sort.key) q.set("sort", state.sort.key);
  if (state.sort.dir !== DEFAULT_STATE.sort.dir) q.set("dir", state.sort.dir);
  if (state.filter !== DEFAULT_STATE.filter) q.set("show", state.filter);
  return `?${q.toString()}`;
}

// ---------------------------------------------------------------- transitions

export function isAblated(state: DebuggerState, node: NodeRef): boolean {
  return state.ablations.some((a) => sameNode(a.node, node));
}

/** Ablates the node (to zero) or, when it is ablated already, un-ablates it. */
export function toggleAblation(state: DebuggerState, node: NodeRef): DebuggerState {
  const ablations = isAblated(state, node)
    ? state.ablations.filter((a) => !sameNode(a.node, node))
    : [...state.ablations, { node, value: 0 }];
  return { ...state, ablations };
}

export function clearAblations(state: DebuggerState): DebuggerState {
  return { ...state, ablations: [] };
}

/**
 * Traces `node` upstream. Tracing a head through V while another node is traced keeps that node
 * as the downstream one: the head's write is then scored by how it moves that node, not the loss
 * (the path "this head's value feeds that node"). Other traces start from the loss.
 */
export function traceUpstream(state: DebuggerState, node: NodeRef, type: AttentionTraceType | null = null): DebuggerState {
  const attentionTraceType = node.nodeType === "attention_head" ? (type ?? "QK") : null;
  let downstream: TracedNode | null = null;
  if (attentionTraceType === "V" && state.trace) {
    const current = state.trace;
    if (current.attentionTraceType === "V") downstream = current.downstream ?? null;
    else if (!sameNode(current.node, node)) downstream = { node: current.node, attentionTraceType: current.attentionTraceType };
  }
  return { ...state, trace: { node, attentionTraceType, ...(downstream ? { downstream } : {}) } };
}

export function stopTracing(state: DebuggerState): DebuggerState {
  return { ...state, trace: null };
}

export function swapTargetAndDistractor(state: DebuggerState): DebuggerState {
  return { ...state, targets: state.distractors, distractors: state.targets };
}

/** Next sort for a click on a column header: a new column starts by magnitude, then desc, asc. */
export function nextSort(current: DebuggerState["sort"], key: SortKey): DebuggerState["sort"] {
  if (current.key !== key) return { key, dir: key === "layer" ? "asc" : "abs" };
  const order: SortDir[] = key === "layer" ? ["asc", "desc"] : ["abs", "desc", "asc"];
  const i = order.indexOf(current.dir);
  return { key, dir: order[(i + 1) % order.length] ?? "abs" };
}

/** Whether two states ask the server the same thing (sorting and filtering are client-side). */
export function requestKey(state: DebuggerState): string {
  const { sort: _sort, filter: _filter, ...request } = state;
  return JSON.stringify(request);
}

// ---------------------------------------------------------------- token lists in inputs

/** `" Mary, John"` -> `[" Mary", " John"]`: comma-separated, spaces kept (they matter). */
export function parseTokenList(text: string): string[] {
  return text.split(",").filter((t) => t.trim() !== "");
}

export function formatTokenList(tokens: readonly string[]): string {
  return tokens.join(",");
}
