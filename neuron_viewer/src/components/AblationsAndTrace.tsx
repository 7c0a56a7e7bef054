import type { AttentionTraceType } from "../api/types";
import { clearAblations, stopTracing, toggleAblation, traceUpstream, type DebuggerState } from "../state/debuggerState";
import { nodeKey, nodeLabelWithTokens } from "../state/nodes";

const TRACE_TYPES: AttentionTraceType[] = ["Q", "K", "QK", "V"];

/** The ablated nodes (each can be un-ablated) and the node being traced, if any. */
export function AblationsAndTrace({ state, tokens, onChange }: { state: DebuggerState; tokens: string[]; onChange: (next: DebuggerState) => void }) {
  if (state.ablations.length === 0 && !state.trace) return null;
  return (
    <div className="card ablations" data-testid="ablations">
      {state.ablations.length > 0 && (
        <div className="row">
          <strong>Ablated:</strong>
          {state.ablations.map((a) => (
            <span key={nodeKey(a.node)} className="pill" data-testid="ablated-node">
              {nodeLabelWithTokens(a.node, tokens)}
              {a.value !== 0 && ` = ${a.value}`}
              <button type="button" className="link-button" title="Un-ablate" onClick={() => onChange(toggleAblation(state, a.node))}>
                un-ablate
              </button>
            </span>
          ))}
          {state.ablations.length > 1 && (
            <button type="button" className="link-button" onClick={() => onChange(clearAblations(state))}>
              un-ablate all
            </button>
          )}
        </div>
      )}
      {state.trace && (
        <div className="row" data-testid="trace-info">
          <strong>Tracing upstream from</strong>
          <span className="pill">{nodeLabelWithTokens(state.trace.node, tokens)}</span>
          {state.trace.attentionTraceType && (
            <span className="toggle">
              through
              {TRACE_TYPES.map((t) => (
                <button
                  key={t}
                  type="button"
                  aria-pressed={state.trace?.attentionTraceType === t}
                  onClick={() => state.trace && onChange(traceUpstream(state, state.trace.node, t))}
                >
                  {t}
                </button>
              ))}
            </span>
          )}
          {state.trace.downstream && (
            <span data-testid="trace-downstream">
              onto
              <span className="pill">
                {nodeLabelWithTokens(state.trace.downstream.node, tokens)}
                {state.trace.downstream.attentionTraceType && ` (${state.trace.downstream.attentionTraceType})`}
              </span>
            </span>
          )}
          <button type="button" className="link-button" data-testid="stop-trace" onClick={() => onChange(stopTracing(state))}>
            stop tracing
          </button>
        </div>
      )}
    </div>
  );
}
