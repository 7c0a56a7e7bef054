// Turns a /batched_tdb response into what the debugger page shows: node-table rows (with the
// unablated values next to the ablated ones), top output logits, per-token and per-layer sums.
import type {
  BatchedResponse,
  ProcessingResponseData,
  ScoredTokensData,
  SubResponse,
  TensorND,
  TokenAndScalar,
  TokenPairAttributionData,
  TopKData,
} from "../api/types";
import { nodeKey, nodeKind, toNodeRef, type NodeKind, type NodeRef } from "./nodes";

export interface NodeValues {
  activation: number;
  writeNorm: number;
  directEffect: number;
  totalEffect: number;
}

export interface ScoredTokenList {
  label: string;
  top: TokenAndScalar[];
  bottom: TokenAndScalar[];
}

export interface NodeRow {
  key: string;
  node: NodeRef;
  kind: NodeKind;
  values: NodeValues;
  /** The same node without ablations (only when something is ablated). */
  baseline: NodeValues | null;
  upvoted: ScoredTokenList | null;
  inputTokens: ScoredTokenList[];
  /** Attention latents: the key tokens their input mostly came from. */
  attendedTo: { token: number; attribution: number }[] | null;
}

export interface LogitRow {
  token: string;
  logit: number;
  baseline: number | null;
}

export type SummaryMetric = "totalEffect" | "directEffect" | "writeNorm";

export interface TokenSumRow {
  index: number;
  token: string;
  embedding: number;
  mlp: number;
  /** Attention written at this token (as the query). */
  attention: number;
  /** Attention read from this token (as the key), summed over queries. */
  attentionFrom: number;
}

export interface LayerSumRow {
  layer: number | null;
  kind: NodeKind;
  count: number;
  totalEffect: number;
  directEffect: number;
}

export interface TdbView {
  tokens: string[];
  loss: number | null;
  baselineLoss: number | null;
  /** The traced node's value (its pre-activation; through V, its direct effect), when tracing. */
  tracedValue: number | null;
  baselineTracedValue: number | null;
  rows: NodeRow[];
  logits: LogitRow[];
  tokenSums: Record<SummaryMetric, TokenSumRow[]>;
  layerSums: LayerSumRow[];
  /** layerSums are over every node (else over the table's nodes only). */
  layerSumsExact: boolean;
  inferenceTime: number;
}

const GROUPS: Record<keyof NodeValues, string> = {
  activation: "activation",
  writeNorm: "write_norm",
  directEffect: "direction_write",
  totalEffect: "act_times_grad",
};

const SCORED_INPUT_TOKENS: [string, string][] = [
  ["inputTokensThatUpvoteMlp", "input tokens that raise it"],
  ["inputTokensThatUpvoteAttnQ", "query tokens that raise it"],
  ["inputTokensThatUpvoteAttnK", "key tokens that raise it"],
];

function step<T extends ProcessingResponseData>(sub: SubResponse | undefined, name: string, type: string): T | null {
  const data = sub?.processingResponseDataByName?.[name];
  if (!data) return null;
  return !data.responseDataType || data.responseDataType === type ? (data as T) : null;
}

const topK = (sub: SubResponse | undefined, name: string) =>
  step<TopKData>(sub, name, "multiple_top_k_derived_scalars_response_data");
const scored = (sub: SubResponse | undefined, name: string) =>
  step<ScoredTokensData>(sub, name, "scored_tokens_response_data");

function valuesByKey(data: TopKData | null): Map<string, NodeValues> {
  const out = new Map<string, NodeValues>();
  if (!data) return out;
  data.nodeIndices.forEach((index, i) => {
    const at = (group: string) => data.activationsByGroupId[group]?.[i] ?? 0;
    out.set(nodeKey(toNodeRef(index)), {
      activation: at(GROUPS.activation),
      writeNorm: at(GROUPS.writeNorm),
      directEffect: at(GROUPS.directEffect),
      totalEffect: at(GROUPS.totalEffect),
    });
  });
  return out;
}

function scoredByKey(data: ScoredTokensData | null, label: string): Map<string, ScoredTokenList> {
  const out = new Map<string, ScoredTokenList>();
  data?.nodeIndices.forEach((index, i) => {
    const tokens = data.topTokensList[i];
    if (tokens) out.set(nodeKey(toNodeRef(index)), { label, top: tokens.top, bottom: tokens.bottom });
  });
  return out;
}

function attendedToByKey(data: TokenPairAttributionData | null): Map<string, NodeRow["attendedTo"]> {
  const out = new Map<string, NodeRow["attendedTo"]>();
  data?.nodeIndices.forEach((index, i) => {
    const top = data.topTokensAttendedToList[i];
    if (top) {
      out.set(
        nodeKey(toNodeRef(index)),
        top.tokenIndices.map((token, j) => ({ token, attribution: top.attributions[j] ?? 0 })),
      );
    }
  });
  return out;
}

function nodeRows(main: SubResponse, baseline: SubResponse | undefined): NodeRow[] {
  const data = topK(main, "topKComponents");
  if (!data) return [];
  const values = valuesByKey(data);
  const baselineValues = baseline ? valuesByKey(topK(baseline, "topKComponents")) : null;
  const upvoted = scoredByKey(scored(main, "upvotedOutputTokens"), "output tokens it upvotes");
  const inputs = SCORED_INPUT_TOKENS.map(([name, label]) => scoredByKey(scored(main, name), label));
  const attended = attendedToByKey(
    step<TokenPairAttributionData>(main, "tokenPairAttribution", "token_pair_attribution_response_data"),
  );
  const seen = new Set<string>();
  const rows: NodeRow[] = [];
  for (const index of data.nodeIndices) {
    const node = toNodeRef(index);
    const key = nodeKey(node);
    if (seen.has(key)) continue;
    seen.add(key);
    rows.push({
      key,
      node,
      kind: nodeKind(node.nodeType),
      values: values.get(key) as NodeValues,
      baseline: baselineValues?.get(key) ?? null,
      upvoted: upvoted.get(key) ?? null,
      inputTokens: inputs.map((m) => m.get(key)).filter((x): x is ScoredTokenList => x !== undefined),
      attendedTo: attended.get(key) ?? null,
    });
  }
  return rows;
}

function logitRows(main: SubResponse, baseline: SubResponse | undefined, limit = 10): LogitRow[] {
  const read = (sub: SubResponse | undefined) => {
    const data = topK(sub, "topOutputTokenLogits");
    const out = new Map<string, { token: string; logit: number }>();
    data?.nodeIndices.forEach((index, i) => {
      const id = index.tensorIndices[index.tensorIndices.length - 1];
      out.set(String(id), {
        token: data.vocabTokenStringsForIndices?.[i] ?? `#${id}`,
        logit: data.activationsByGroupId.logits?.[i] ?? 0,
      });
    });
    return out;
  };
  const mainLogits = read(main);
  const baseLogits = baseline ? read(baseline) : null;
  return [...mainLogits.entries()]
    .sort((a, b) => b[1].logit - a[1].logit)
    .slice(0, limit)
    .map(([id, { token, logit }]) => ({ token, logit, baseline: baseLogits?.get(id)?.logit ?? null }));
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** Per-token values: a per-token tensor as is, a (query, key) tensor summed over keys. */
function rowSums(t: TensorND): number[] {
  switch (t.tensorType) {
    case "tensor_1d":
      return t.value;
    case "tensor_2d":
      return t.value.map(sum);
    default:
      return [];
  }
}

function columnSums(t: TensorND, n: number): number[] {
  const out = new Array<number>(n).fill(0);
  if (t.tensorType === "tensor_2d") {
    for (const row of t.value) row.forEach((v, k) => (out[k] = (out[k] ?? 0) + v));
  }
  return out;
}

function dstKind(dst: string): "embedding" | "mlp" | "attention" | null {
  if (dst.startsWith("resid_post_embedding") || dst === "token_attribution") return "embedding";
  if (dst.includes("attn") || dst.includes("attention")) return "attention";
  // a transcoder stands in for its layer's MLP
  if (dst.includes("mlp") || dst.includes("transcoder")) return "mlp";
  return null;
}

/**
 * Per-token sums of each effect, by node kind. Our server sends them per query token
 * (componentSumsByToken) and per attended-to token (componentSumsByAttendedToToken), linear in
 * the prompt; the original server only per token pair (componentSumsForTokenDisplay), which is
 * summed here both ways.
 */
function tokenSums(main: SubResponse, tokens: string[]): Record<SummaryMetric, TokenSumRow[]> {
  const byToken = topK(main, "componentSumsByToken")?.intermediateSumActivationsByDstByGroupId;
  const byKey = topK(main, "componentSumsByAttendedToToken")?.intermediateSumActivationsByDstByGroupId;
  const pairs = topK(main, "componentSumsForTokenDisplay")?.intermediateSumActivationsByDstByGroupId ?? {};
  const forMetric = (metric: SummaryMetric): TokenSumRow[] => {
    const rows = tokens.map((token, index) => ({ index, token, embedding: 0, mlp: 0, attention: 0, attentionFrom: 0 }));
    const group = GROUPS[metric];
    const add = (values: number[], field: "embedding" | "mlp" | "attention" | "attentionFrom") =>
      values.forEach((v, i) => {
        const row = rows[i];
        if (row) row[field] += v;
      });
    for (const [dst, tensor] of Object.entries((byToken ?? pairs)[group] ?? {})) {
      const kind = dstKind(dst);
      if (kind) add(rowSums(tensor), kind);
    }
    for (const [dst, tensor] of Object.entries((byKey ?? pairs)[group] ?? {})) {
      if (dstKind(dst) !== "attention") continue;
      add(byKey ? rowSums(tensor) : columnSums(tensor, tokens.length), "attentionFrom");
    }
    return rows;
  };
  return { totalEffect: forMetric("totalEffect"), directEffect: forMetric("directEffect"), writeNorm: forMetric("writeNorm") };
}

/**
 * Per layer and kind (embeddings first): the sums over every node of the layer, from the
 * server's componentSumsForLayerDisplay step (exact); `count` is how many of the table's nodes
 * sit there. A server without that step gets sums over the table's nodes (`exact: false`).
 */
export function layerSums(main: SubResponse, rows: NodeRow[]): { exact: boolean; rows: LayerSumRow[] } {
  const byKey = new Map<string, LayerSumRow>();
  const entry = (layer: number | null, kind: NodeKind) => {
    const key = `${layer ?? -1}:${kind}`;
    const e = byKey.get(key) ?? { layer, kind, count: 0, totalEffect: 0, directEffect: 0 };
    byKey.set(key, e);
    return e;
  };
  const sums = topK(main, "componentSumsForLayerDisplay")?.intermediateSumActivationsByDstByGroupId;
  if (sums) {
    for (const metric of ["totalEffect", "directEffect"] as const) {
      for (const [dst, tensor] of Object.entries(sums[GROUPS[metric]] ?? {})) {
        const kind = dstKind(dst);
        if (!kind || tensor.tensorType !== "tensor_1d") continue;
        // one value per layer; a single one for the (layerless) embeddings
        tensor.value.forEach((v, layer) => (entry(kind === "embedding" ? null : layer, kind)[metric] += v));
      }
    }
    for (const row of rows) {
      const e = byKey.get(`${row.node.layerIndex ?? -1}:${row.kind}`);
      if (e) e.count += 1;
    }
  } else {
    for (const row of rows) {
      const e = entry(row.node.layerIndex, row.kind);
      e.count += 1;
      e.totalEffect += row.values.totalEffect;
      e.directEffect += row.values.directEffect;
    }
  }
  const kindOrder: NodeKind[] = ["embedding", "attention", "mlp", "residual", "other"];
  const sorted = [...byKey.values()].sort(
    (a, b) => (a.layer ?? -1) - (b.layer ?? -1) || kindOrder.indexOf(a.kind) - kindOrder.indexOf(b.kind),
  );
  return { exact: sums !== undefined, rows: sorted };
}

export function toTdbView(response: BatchedResponse, hasBaseline: boolean): TdbView {
  const [main, second] = response.inferenceSubResponses;
  if (!main) throw new Error("the server answered /batched_tdb with no sub-response");
  const baseline = hasBaseline ? second : undefined;
  const data = main.inferenceResponse.inferenceAndTokenData;
  const rows = nodeRows(main, baseline);
  const layers = layerSums(main, rows);
  return {
    tokens: data.tokensAsStrings,
    loss: data.loss ?? null,
    baselineLoss: baseline?.inferenceResponse.inferenceAndTokenData.loss ?? null,
    tracedValue: data.activationValueForBackwardPass ?? null,
    baselineTracedValue: baseline?.inferenceResponse.inferenceAndTokenData.activationValueForBackwardPass ?? null,
    rows,
    logits: logitRows(main, baseline),
    tokenSums: tokenSums(main, data.tokensAsStrings),
    layerSums: layers.rows,
    layerSumsExact: layers.exact,
    inferenceTime: data.inferenceTime,
  };
}
