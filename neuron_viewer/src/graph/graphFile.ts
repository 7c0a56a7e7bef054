// Neuronpedia's attribution-graph JSON (what /attribution_graph answers, what
// `python -m neuron_explainer.graph --out` writes, what circuit-tracer exports): its types,
// a check of a file read from disk, and what the viewer reads off its nodes.
import type { components } from "../client/schema";

type Schemas = components["schemas"];
export type GraphFile = Schemas["AttributionGraphFile"];
export type GraphNode = Schemas["AttributionGraphNode"];
export type GraphLink = Schemas["AttributionGraphLink"];

/** feature: a transcoder latent; error: what the transcoder misses of an MLP's output. */
export type GraphNodeKind = "feature" | "error" | "embedding" | "logit";

export function graphNodeKind(node: GraphNode): GraphNodeKind {
  switch (node.feature_type) {
    case "embedding":
      return "embedding";
    case "logit":
      return "logit";
    case "mlp reconstruction error":
      return "error";
    default:
      return "feature"; // "cross layer transcoder", "transcoder", ... : latents of some coder
  }
}

/** The model's layer count: the file's metadata.info.n_layers (ours), else from the nodes (a
 * logit node sits at layer n_layers + 1). */
export function layerCount(graph: GraphFile): number {
  const fromInfo = graph.metadata.info?.n_layers;
  if (typeof fromInfo === "number" && Number.isInteger(fromInfo) && fromInfo > 0) return fromInfo;
  const logitLayers = graph.nodes.filter((n) => graphNodeKind(n) === "logit").map((n) => Number(n.layer));
  const finite = logitLayers.filter(Number.isFinite);
  if (finite.length > 0) return Math.max(...finite) - 1;
  const layers = graph.nodes.map((n) => Number(n.layer)).filter(Number.isFinite);
  return layers.length > 0 ? Math.max(...layers) + 1 : 0;
}

/** The layer index of a feature or error node (null for embeddings and logits). */
export function modelLayer(node: GraphNode): number | null {
  const kind = graphNodeKind(node);
  if (kind === "embedding" || kind === "logit") return null;
  const layer = Number(node.layer);
  return Number.isInteger(layer) ? layer : null;
}

/** A feature's latent index: our `latent_index`, else the middle of its id `{layer}_{latent}_{pos}`. */
export function latentIndex(node: GraphNode): number | null {
  if (graphNodeKind(node) !== "feature") return null;
  if (typeof node.latent_index === "number") return node.latent_index;
  const match = /^\d+_(\d+)_\d+$/.exec(node.node_id);
  return match ? Number(match[1]) : null;
}

/** A short label: `L2 #131`, `error L1`, the token of an embedding or logit. */
export function graphNodeLabel(node: GraphNode, promptTokens: readonly string[]): string {
  switch (graphNodeKind(node)) {
    case "feature":
      return `L${node.layer} #${latentIndex(node) ?? "?"}`;
    case "error":
      return `error L${node.layer}`;
    case "embedding":
      return `emb ${JSON.stringify(node.token ?? promptTokens[node.ctx_idx] ?? "?")}`;
    case "logit":
      return node.clerp || `logit ${JSON.stringify(node.token ?? "?")}`;
  }
}

function fail(where: string, what: string): never {
  throw new Error(`not an attribution graph file: ${where}: ${what}`);
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/**
 * Checks a parsed JSON document is a graph file (the fields the viewer reads, with their types;
 * other fields are kept as they are) and that every link joins two of its nodes. Throws one line
 * naming what is wrong, as the server's reader does.
 */
export function parseGraphFile(doc: unknown): GraphFile {
  if (!isRecord(doc)) fail("the file", "not a JSON object");
  const { metadata, nodes, links } = doc;
  if (!isRecord(metadata)) fail("metadata", "missing");
  if (!Array.isArray(metadata.prompt_tokens) || !metadata.prompt_tokens.every((t) => typeof t === "string")) {
    fail("metadata.prompt_tokens", "not a list of strings");
  }
  if (!Array.isArray(nodes)) fail("nodes", "not a list");
  if (!Array.isArray(links)) fail("links", "not a list");
  const ids = new Set<string>();
  nodes.forEach((n: unknown, i) => {
    if (!isRecord(n)) fail(`nodes.${i}`, "not an object");
    if (typeof n.node_id !== "string") fail(`nodes.${i}.node_id`, "not a string");
    if (typeof n.ctx_idx !== "number") fail(`nodes.${i}.ctx_idx`, "not a number");
    if (typeof n.layer !== "string" && typeof n.layer !== "number") fail(`nodes.${i}.layer`, "not a string or number");
    if (typeof n.feature_type !== "string") fail(`nodes.${i}.feature_type`, "not a string");
    if (ids.has(n.node_id)) fail(`nodes.${i}.node_id`, `duplicate id ${n.node_id}`);
    ids.add(n.node_id);
  });
  links.forEach((l: unknown, i) => {
    if (!isRecord(l)) fail(`links.${i}`, "not an object");
    if (typeof l.weight !== "number") fail(`links.${i}.weight`, "not a number");
    if (typeof l.source !== "string" || !ids.has(l.source)) fail(`links.${i}.source`, "not a node of the file");
    if (typeof l.target !== "string" || !ids.has(l.target)) fail(`links.${i}.target`, "not a node of the file");
  });
  const qParams = isRecord(doc.qParams) ? doc.qParams : {};
  return { ...doc, metadata, nodes, links, qParams } as GraphFile;
}
