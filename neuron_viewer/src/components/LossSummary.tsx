import { formatDelta, formatNumber } from "../lib/format";
import type { DebuggerState } from "../state/debuggerState";
import { showToken } from "../state/nodes";
import type { TdbView } from "../state/tdbView";

const list = (tokens: string[]) => tokens.map((t) => `“${showToken(t)}”`).join(", ");

/** The objective: logit difference (or the traced node's activation), ablated vs unablated. */
export function LossSummary({ state, view }: { state: DebuggerState; view: TdbView }) {
  // through V the objective is the downstream node when there is one, else the loss
  const objective = !state.trace ? "loss" : state.trace.attentionTraceType !== "V" ? "traced" : state.trace.downstream ? "downstream" : "loss";
  const label =
    objective === "traced"
      ? "Traced node's pre-activation"
      : objective === "downstream"
        ? "Downstream node's pre-activation"
        : `Logit difference ${list(state.targets)} − ${list(state.distractors)}`;
  return (
    <div className="loss-summary" data-testid="loss-summary">
      <span className="muted">{label}:</span>{" "}
      <strong data-testid="loss-value" data-value={view.loss ?? ""}>{formatNumber(view.loss)}</strong>
      {view.baselineLoss !== null && view.loss !== null && (
        <>
          {" "}
          <span className="muted">
            ablated; unablated <span data-testid="loss-baseline" data-value={view.baselineLoss}>{formatNumber(view.baselineLoss)}</span> (
            <span data-testid="loss-delta">{formatDelta(view.loss - view.baselineLoss)}</span>)
          </span>
        </>
      )}
      <span className="muted small"> · {view.tokens.length} tokens · {view.inferenceTime.toFixed(2)} s</span>
    </div>
  );
}
