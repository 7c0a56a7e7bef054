// Nodes as the viewer handles them: identity (a stable string key for the URL and for matching
// rows across sub-responses), kind, labels and the derived scalar types that go with them.
import type { DerivedScalarType, MirroredNodeIndex, NodeType } from "../api/types";
import type { NodePageType } from "../router";

export interface NodeRef {
  nodeType: NodeType;
  layerIndex: number | null;
  tensorIndices: (number | null)[];
}

/** What a node decomposes: the token embeddings, an MLP's write (neurons, MLP latents, transcoder
 * latents), an attention layer's write (heads, attention latents) or the residual stream itself
 * (residual-stream SAE latents, which overlap everything written before them). */
export type NodeKind = "embedding" | "mlp" | "attention" | "residual" | "other";

const KNOWN_NODE_TYPES = [
  "layer",
  "mlp_neuron",
  "attention_head",
  "mlp_autoencoder_latent",
  "attention_autoencoder_latent",
  "autoencoder_latent",
  "residual_autoencoder_latent",
  "transcoder_latent",
] as const satisfies readonly NodeType[];

export function toNodeRef(index: MirroredNodeIndex): NodeRef {
  return { nodeType: index.nodeType, layerIndex: index.layerIndex ?? null, tensorIndices: [...index.tensorIndices] };
}

export function toMirrored(node: NodeRef): MirroredNodeIndex {
  return { nodeType: node.nodeType, layerIndex: node.layerIndex, tensorIndices: node.tensorIndices, passType: "forward" };
}

/** `attention_head:0:14,6,2` (type, layer, tensor indices; `-` for no layer, `*` for "all"). */
export function nodeKey(node: NodeRef): string {
  const indices = node.tensorIndices.map((i) => (i === null ? "*" : String(i))).join(",");
  return `${node.nodeType}:${node.layerIndex ?? "-"}:${indices}`;
}

export function parseNodeKey(key: string): NodeRef | null {
  const match = /^([a-z_]+):(-|\d+):((?:-?\d+|\*)(?:,(?:-?\d+|\*))*)$/.exec(key.trim());
  if (!match) return null;
  const [, type, layer, indices] = match;
  if (!(KNOWN_NODE_TYPES as readonly string[]).includes(type ?? "")) return null;
  return {
    nodeType: type as NodeType,
    layerIndex: layer === "-" ? null : Number(layer),
    tensorIndices: (indices ?? "").split(",").map((i) => (i === "*" ? null : Number(i))),
  };
}

export function sameNode(a: NodeRef, b: NodeRef): boolean {
  return nodeKey(a) === nodeKey(b);
}

export function nodeKind(nodeType: NodeType): NodeKind {
  switch (nodeType) {
    case "layer":
      return "embedding";
    case "mlp_neuron":
    case "mlp_autoencoder_latent":
    case "transcoder_latent":
      return "mlp";
    case "attention_head":
    case "attention_autoencoder_latent":
      return "attention";
    case "residual_autoencoder_latent":
      return "residual";
    default:
      return "other";
  }
}

export function isAttentionHead(node: NodeRef): boolean {
  return node.nodeType === "attention_head";
}

/** Whether the viewer offers to ablate or trace it: MLP, attention and residual-stream nodes
 * (not embeddings, not vocab tokens). Where the server refuses one, its 400 message is shown. */
export function isAblatable(node: NodeRef): boolean {
  const kind = nodeKind(node.nodeType);
  return kind === "mlp" || kind === "attention" || kind === "residual";
}

/** The index of the component within its layer: neuron, head or latent. */
export function componentIndex(node: NodeRef): number | null {
  return node.tensorIndices[node.tensorIndices.length - 1] ?? null;
}

const TYPE_NAMES: Partial<Record<NodeType, string>> = {
  layer: "embedding",
  mlp_neuron: "MLP neuron",
  attention_head: "attention head",
  mlp_autoencoder_latent: "MLP latent",
  attention_autoencoder_latent: "attention latent",
  autoencoder_latent_by_token_pair: "attention latent by token pair",
  residual_autoencoder_latent: "residual latent",
  transcoder_latent: "transcoder latent",
};

export function nodeTypeName(nodeType: NodeType): string {
  return TYPE_NAMES[nodeType] ?? nodeType.replace(/_/g, " ");
}

export function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** `MLP 1:203`, `head 0.2`, `MLP latent 3:77`, `embedding`. */
export function componentLabel(node: NodeRef): string {
  const index = componentIndex(node);
  switch (node.nodeType) {
    case "layer":
      return "embedding";
    case "attention_head":
      return `head ${node.layerIndex}.${index}`;
    case "mlp_neuron":
      return `MLP ${node.layerIndex}:${index}`;
    default:
      return `${nodeTypeName(node.nodeType)} ${node.layerIndex}:${index}`;
  }
}

/** The token positions a node sits at: one, or (query, key) for an attention head. */
export function nodeTokenPositions(node: NodeRef): { token: number | null; keyToken?: number | null } {
  const [first, second] = node.tensorIndices;
  if (node.nodeType === "attention_head") return { token: first ?? null, keyToken: second ?? null };
  return { token: first ?? null };
}

/** A token position as the server sends it (may be negative: counted from the end). */
export function tokenAt(tokens: string[], position: number | null | undefined): string | null {
  if (position === null || position === undefined) return null;
  const i = position < 0 ? tokens.length + position : position;
  return tokens[i] ?? null;
}

/** Shows spaces and newlines in tokens. */
export function showToken(token: string): string {
  return token.replace(/\n/g, "↵").replace(/ /g, "\u00a0");
}

export function nodeLabelWithTokens(node: NodeRef, tokens: string[]): string {
  const { token, keyToken } = nodeTokenPositions(node);
  const at = (p: number | null | undefined) => `${JSON.stringify(tokenAt(tokens, p) ?? "?")}@${p ?? "*"}`;
  const where = node.nodeType === "attention_head" ? `${at(token)} ← ${at(keyToken)}` : at(token);
  return `${componentLabel(node)} ${where}`;
}

/** The node page a node belongs to (none for embeddings and vocab tokens). */
export function nodePageType(nodeType: NodeType): NodePageType | null {
  switch (nodeType) {
    case "mlp_neuron":
    case "attention_head":
    case "mlp_autoencoder_latent":
    case "attention_autoencoder_latent":
    case "residual_autoencoder_latent":
    case "transcoder_latent":
      return nodeType;
    default:
      return null;
  }
}

/** The scalar the neuron datasets and explanations are keyed by, per node page type. */
export function recordDst(nodeType: NodePageType): DerivedScalarType {
  switch (nodeType) {
    case "mlp_neuron":
      return "mlp_post_act";
    case "attention_head":
      return "attn_write_norm";
    case "mlp_autoencoder_latent":
      return "mlp_autoencoder_latent";
    case "attention_autoencoder_latent":
      return "attention_autoencoder_latent";
    case "autoencoder_latent_by_token_pair":
      return "flattened_attn_write_to_latent_summed_over_heads";
    case "residual_autoencoder_latent":
      return "residual_autoencoder_latent";
    case "transcoder_latent":
      return "transcoder_latent";
  }
}

/** Pages whose values are per token pair (the head's, or the latent's share of each pair). */
export function isTokenPairPage(nodeType: NodePageType): boolean {
  return nodeType === "attention_head" || nodeType === "autoencoder_latent_by_token_pair";
}

/** The scalar computed on a user's prompt (/derived_scalars; heads use the attention route). */
export function promptDst(nodeType: NodePageType): DerivedScalarType {
  switch (nodeType) {
    case "mlp_neuron":
      return "mlp_post_act";
    case "attention_head":
      return "unflattened_attn_write_norm";
    case "mlp_autoencoder_latent":
      return "online_mlp_autoencoder_latent";
    case "attention_autoencoder_latent":
      return "online_attention_autoencoder_latent";
    case "autoencoder_latent_by_token_pair":
      return "attn_write_to_latent_summed_over_heads";
    case "residual_autoencoder_latent":
      return "online_residual_autoencoder_latent";
    case "transcoder_latent":
      return "online_transcoder_latent";
  }
}

/** The dataset short name the original client sends: `<model>` or `<model>_<mlp ae>_<attn ae>`
 * (an autoencoder given as a folder counts by its last path component). */
export function datasetName(info: {
  modelName?: string | null;
  mlpAutoencoderName?: string | null;
  attentionAutoencoderName?: string | null;
  hasMlpAutoencoder: boolean;
  hasAttentionAutoencoder: boolean;
}): string {
  const model = info.modelName || "model";
  if (!info.hasMlpAutoencoder && !info.hasAttentionAutoencoder) return model;
  const short = (name: string | null | undefined) => (name ?? "").split(/[\\/]/).filter(Boolean).pop() ?? "";
  return [model, short(info.mlpAutoencoderName), short(info.attentionAutoencoderName)].join("_");
}
