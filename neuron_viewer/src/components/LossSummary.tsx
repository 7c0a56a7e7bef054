import { formatDelta, formatNumber } from "../lib/format";
import type { DebuggerState } from "../state/debuggerState";
import { showToken } from "../state/nodes";
import type { TdbView } from "../state/tdbView";

const list = (tokens: string[]) => tokens.map((t) => `“${showToken(t)}”`).join(", ");

/** The objective, ablated vs unablated: the logit difference, or while tracing the traced
 * node's value (the server's activationValueForBackwardPass: its pre-activation, or through V
 * its direct effect on the downstream node or on the logit difference). */
export function LossSummary({ state, view }: { state: DebuggerState; view: TdbView }) {
  const tracing = state.trace !== null;
  const throughV = state.trace?.attentionTraceType === "V";
  const label = !tracing
    ? `Logit difference ${list(state.targets)} − ${list(state.distractors)}`
    : !throughV
      ? "Traced node's pre-activation"
      : state.trace?.downstream
        ? "Traced head's direct effect on the downstream node's pre-activation"
        : `Traced head's direct effect on the logit difference ${list(state.targets)} − ${list(state.distractors)}`;
  const value = tracing ? view.tracedValue : view.loss;
  const baseline = tracing ? view.baselineTracedValue : view.baselineLoss;
  return (
    <div className="loss-summary" data-testid="loss-summary">
      <span className="muted">{label}:</span>{" "}
      <strong data-testid="loss-value" data-value={value ?? ""}>{formatNumber(value)}</strong>
      {baseline !== null && value !== null && (
        <>
          {" "}
          <span className="muted">
            ablated; unablated <span data-testid="loss-baseline" data-value={baseline}>{formatNumber(baseline)}</span> (
            <span data-testid="loss-delta">{formatDelta(value - baseline)}</span>)
          </span>
        </>
      )}
      {tracing && throughV && !state.trace?.downstream && view.loss !== null && (
        <span className="muted" data-testid="loss-while-tracing">
          {" "}
          · logit difference {formatNumber(view.loss)}
        </span>
      )}
      <span className="muted small"> · {view.tokens.length} tokens · {view.inferenceTime.toFixed(2)} s</span>
    </div>
  );
}
