// Client-side pruning of a graph file, with circuit-tracer's definitions (the server's
// debugger/graph/pruning.py), applied over the nodes and links the file has:
//
// node threshold: a node's `influence` in the file is its cumulative influence fraction (the
//   share of all influence on the logits carried by it and every more influential node, over the
//   whole unpruned graph). The fewest nodes reaching the threshold are kept: those below it and
//   the one that crosses it. Embeddings and logits are always kept; a node without an influence
//   (another generator's file) too.
// edge threshold: on the kept nodes' links, Â[t, s] = |w| / (sum of |w| into t); an edge's score
//   is Â[t, s] * (logit weight of t + influence of t), the influence on the output flowing
//   through it. The fewest edges carrying the threshold of the total score are kept.
// Then features and errors nothing reads, and features that read nothing, are dropped, until
// none is left. A threshold of 1 keeps everything the file has.
import { graphNodeKind, type GraphFile, type GraphLink, type GraphNode } from "./graphFile";

export interface PruneThresholds {
  node: number;
  edge: number;
}

export const DEFAULT_THRESHOLDS: PruneThresholds = { node: 0.8, edge: 0.98 };

export interface PrunedGraph {
  nodes: GraphNode[];
  links: GraphLink[];
}

const alwaysKept = (node: GraphNode) => {
  const kind = graphNodeKind(node);
  return kind === "embedding" || kind === "logit";
};

/** The index into `ordered` (ascending cumulative fractions) of the first value reaching
 * `threshold`: the node that crosses it (the last one when none does). */
function crossingIndex(ordered: readonly number[], threshold: number): number {
  const i = ordered.findIndex((c) => c >= threshold);
  return i === -1 ? ordered.length - 1 : i;
}

export function selectNodes(nodes: readonly GraphNode[], threshold: number): GraphNode[] {
  if (threshold >= 1) return [...nodes];
  const scored = nodes.filter((n) => !alwaysKept(n) && typeof n.influence === "number");
  const ordered = scored.map((n) => n.influence as number).sort((a, b) => a - b);
  const cutoff = ordered.length > 0 ? ordered[crossingIndex(ordered, threshold)] ?? -Infinity : -Infinity;
  return nodes.filter((n) => alwaysKept(n) || typeof n.influence !== "number" || n.influence <= cutoff);
}

/** Each logit's weight: its probability; all equal when the file gives none (a logit difference). */
function logitWeights(nodes: readonly GraphNode[]): Map<string, number> {
  const logits = nodes.filter((n) => graphNodeKind(n) === "logit");
  const total = logits.reduce((sum, n) => sum + (n.token_prob ?? 0), 0);
  return new Map(logits.map((n) => [n.node_id, total > 0 ? (n.token_prob ?? 0) : 1]));
}

/** Node ids, every source before the targets it feeds (links go up the model: acyclic). */
function topologicalOrder(ids: readonly string[], links: readonly GraphLink[]): string[] {
  const indegree = new Map(ids.map((id) => [id, 0]));
  const out = new Map<string, string[]>();
  for (const l of links) {
    indegree.set(l.target, (indegree.get(l.target) ?? 0) + 1);
    const targets = out.get(l.source);
    if (targets) targets.push(l.target);
    else out.set(l.source, [l.target]);
  }
  const order = ids.filter((id) => indegree.get(id) === 0);
  for (let next = 0; next < order.length; next++) {
    const id = order[next] as string;
    for (const t of out.get(id) ?? []) {
      const d = (indegree.get(t) ?? 0) - 1;
      indegree.set(t, d);
      if (d === 0) order.push(t);
    }
  }
  if (order.length !== ids.length) throw new Error("the graph's links form a cycle");
  return order;
}

/** Each link's score: the influence on the output that flows through it (same order as `links`). */
export function edgeScores(nodes: readonly GraphNode[], links: readonly GraphLink[]): number[] {
  const weights = logitWeights(nodes);
  const inTotal = new Map<string, number>();
  for (const l of links) inTotal.set(l.target, (inTotal.get(l.target) ?? 0) + Math.abs(l.weight));
  const incoming = new Map<string, number[]>();
  links.forEach((l, i) => {
    const into = incoming.get(l.target);
    if (into) into.push(i);
    else incoming.set(l.target, [i]);
  });
  const influence = new Map<string, number>();
  const scores = new Array<number>(links.length).fill(0);
  // from the logits down: a node's influence is complete once every node it feeds is done
  for (const id of topologicalOrder(nodes.map((n) => n.node_id), links).reverse()) {
    const through = (weights.get(id) ?? 0) + (influence.get(id) ?? 0);
    const total = inTotal.get(id) ?? 0;
    for (const i of incoming.get(id) ?? []) {
      const link = links[i] as GraphLink;
      const score = total > 0 ? (Math.abs(link.weight) / total) * through : 0;
      scores[i] = score;
      influence.set(link.source, (influence.get(link.source) ?? 0) + score);
    }
  }
  return scores;
}

export function selectLinks(links: readonly GraphLink[], scores: readonly number[], threshold: number): GraphLink[] {
  if (threshold >= 1 || links.length === 0) return [...links];
  const total = scores.reduce((a, b) => a + b, 0);
  if (total <= 0) return [...links];
  const order = links.map((_, i) => i).sort((a, b) => (scores[b] ?? 0) - (scores[a] ?? 0) || a - b);
  const kept = new Set<number>();
  let cumulative = 0;
  for (const i of order) {
    kept.add(i);
    cumulative += (scores[i] ?? 0) / total;
    if (cumulative >= threshold) break;
  }
  return links.filter((_, i) => kept.has(i));
}

/** Drops features and errors without outgoing links and features without incoming ones, until none. */
export function dropDangling(nodes: readonly GraphNode[], links: readonly GraphLink[]): PrunedGraph {
  let keptNodes = [...nodes];
  let keptLinks = [...links];
  for (;;) {
    const sources = new Set(keptLinks.map((l) => l.source));
    const targets = new Set(keptLinks.map((l) => l.target));
    const next = keptNodes.filter((n) => {
      const kind = graphNodeKind(n);
      if (kind === "embedding" || kind === "logit") return true;
      if (!sources.has(n.node_id)) return false;
      return kind !== "feature" || targets.has(n.node_id);
    });
    if (next.length === keptNodes.length) return { nodes: keptNodes, links: keptLinks };
    const ids = new Set(next.map((n) => n.node_id));
    keptNodes = next;
    keptLinks = keptLinks.filter((l) => ids.has(l.source) && ids.has(l.target));
  }
}

export function pruneGraph(graph: Pick<GraphFile, "nodes" | "links">, thresholds: PruneThresholds): PrunedGraph {
  const nodes = selectNodes(graph.nodes, thresholds.node);
  const ids = new Set(nodes.map((n) => n.node_id));
  const links = graph.links.filter((l) => ids.has(l.source) && ids.has(l.target));
  const kept = selectLinks(links, edgeScores(nodes, links), thresholds.edge);
  return dropDangling(nodes, kept);
}
