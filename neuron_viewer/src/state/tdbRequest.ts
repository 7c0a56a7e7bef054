import type { BatchedTdbRequest, TdbRequestSpec } from "../api/types";
import type { DebuggerState } from "./debuggerState";
import { toMirrored } from "./nodes";

/** The /batched_tdb body for a state: with ablations, the ablated prompt first and the same
 * prompt unablated second (as the original client sends it), so both can be shown side by side. */
export function buildTdbRequest(state: DebuggerState): BatchedTdbRequest {
  const spec: TdbRequestSpec = {
    prompt: state.prompt,
    targetTokens: state.targets,
    distractorTokens: state.distractors,
    componentTypeForMlp: state.mlp,
    componentTypeForAttention: state.attn,
    // sent only when asked: a server without residual-stream SAEs need not know the field
    ...(state.residual ? { includeResidualLatents: true } : {}),
    topAndBottomKForNodeTable: state.k,
    hideEarlyLayersWhenAblating: true,
    nodeAblations: state.ablations.map((a) => ({ nodeIndex: toMirrored(a.node), value: a.value })),
  };
  if (state.trace) {
    spec.upstreamNodeToTrace = {
      nodeIndex: toMirrored(state.trace.node),
      ...(state.trace.attentionTraceType ? { attentionTraceType: state.trace.attentionTraceType } : {}),
    };
    const down = state.trace.downstream;
    if (down) {
      spec.downstreamNodeToTrace = {
        nodeIndex: toMirrored(down.node),
        ...(down.attentionTraceType ? { attentionTraceType: down.attentionTraceType } : {}),
      };
    }
  }
  const subRequests = [spec];
  if (state.ablations.length > 0) subRequests.push({ ...spec, nodeAblations: [] });
  return { subRequests };
}
