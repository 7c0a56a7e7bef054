// From a graph node to the other pages: a feature's node page (the transcoder latent it is),
// and the debugger with that latent ablated at its token; and from the debugger to the graph.
import { debuggerPath, nodePagePath } from "../router";
import { DEFAULT_STATE, serializeDebuggerState, type DebuggerState } from "../state/debuggerState";
import { graphNodeKind, latentIndex, modelLayer, type GraphFile, type GraphNode } from "./graphFile";
import { DEFAULT_REQUEST, DEFAULT_VIEW, serializeGraphState } from "./graphState";

/**
 * The prompt as the debugger must get it so token positions match the graph's: the server puts a
 * start token first when the prompt has none (and the graph's positions count it), so when the
 * graph's first token is one the prompt lacks, it is written in front.
 */
export function debuggerPrompt(metadata: Pick<GraphFile["metadata"], "prompt" | "prompt_tokens">): string {
  const [first, ...rest] = metadata.prompt_tokens;
  if (first !== undefined && !metadata.prompt.startsWith(first) && rest.join("") === metadata.prompt) return first + metadata.prompt;
  return metadata.prompt;
}

/** The logit tokens of the graph, most probable first (the target first). */
function logitTokens(graph: GraphFile): string[] {
  return graph.nodes
    .filter((n) => graphNodeKind(n) === "logit" && typeof n.token === "string")
    .sort((a, b) => Number(b.is_target_logit ?? false) - Number(a.is_target_logit ?? false) || (b.token_prob ?? 0) - (a.token_prob ?? 0))
    .map((n) => n.token as string);
}

export function graphNodePagePath(model: string, graph: GraphFile, node: GraphNode): string | null {
  const layer = modelLayer(node);
  const latent = latentIndex(node);
  if (graphNodeKind(node) !== "feature" || layer === null || latent === null) return null;
  return nodePagePath(model, "transcoder_latent", layer, latent, new URLSearchParams({ prompt: debuggerPrompt(graph.metadata) }).toString());
}

/** The debugger state with the feature (a transcoder latent at its token) ablated to 0. Target and
 * distractor: the graph request's when known, else the graph's top logit against nothing. */
export function ablationState(graph: GraphFile, node: GraphNode, tokens?: { targets: string[]; distractors: string[] }): DebuggerState | null {
  const layer = modelLayer(node);
  const latent = latentIndex(node);
  if (graphNodeKind(node) !== "feature" || layer === null || latent === null) return null;
  const [top] = logitTokens(graph);
  const targets = tokens && tokens.targets.length > 0 ? tokens.targets : top !== undefined ? [top] : DEFAULT_STATE.targets;
  const distractors = tokens && tokens.targets.length > 0 ? tokens.distractors : [];
  return {
    ...DEFAULT_STATE,
    prompt: debuggerPrompt(graph.metadata),
    targets,
    distractors,
    mlp: "transcoder_latent",
    ablations: [{ node: { nodeType: "transcoder_latent", layerIndex: layer, tensorIndices: [node.ctx_idx, latent] }, value: 0 }],
  };
}

export function ablateInDebuggerPath(model: string, graph: GraphFile, node: GraphNode, tokens?: { targets: string[]; distractors: string[] }): string | null {
  const state = ablationState(graph, node, tokens);
  return state ? debuggerPath(model, serializeDebuggerState(state)) : null;
}

/** The graph page's query for the debugger's prompt, target and distractor (its logit difference). */
export function graphLinkFor(state: Pick<DebuggerState, "prompt" | "targets" | "distractors">): string {
  return serializeGraphState({
    request: { ...DEFAULT_REQUEST, prompt: state.prompt, targets: state.targets, distractors: state.targets.length > 0 ? state.distractors : [] },
    view: DEFAULT_VIEW,
  });
}
