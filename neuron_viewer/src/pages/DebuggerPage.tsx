import { useEffect, useMemo } from "react";
import { api } from "../api/client";
import { useExplanations, useModelInfo } from "../api/hooks";
import { AblationsAndTrace } from "../components/AblationsAndTrace";
import { DebuggerControls } from "../components/DebuggerControls";
import { LossSummary } from "../components/LossSummary";
import { NodeTable, visibleRows } from "../components/NodeTable";
import { ErrorNote, Loading } from "../components/Notes";
import { PromptForm, type PromptInput } from "../components/PromptForm";
import { LayerSummaryPanel, LogitsPanel, TokenSummaryPanel } from "../components/SummaryPanels";
import { useAsync } from "../lib/useAsync";
import { Link } from "../components/Link";
import { graphLinkFor } from "../graph/graphLinks";
import { debuggerPath, graphPath, navigate, useLocation } from "../router";
import { parseDebuggerState, requestKey, serializeDebuggerState, type DebuggerState } from "../state/debuggerState";
import { nodeKind } from "../state/nodes";
import { buildTdbRequest } from "../state/tdbRequest";
import { toTdbView } from "../state/tdbView";

const EXPLAINED_ROWS = 30; // as the original client: explanations for the first 30 rows

export function DebuggerPage({ model }: { model: string }) {
  const { search } = useLocation();
  const state = useMemo(() => parseDebuggerState(search), [search]);
  const info = useModelInfo();

  const setState = (next: DebuggerState, options: { replace?: boolean } = {}) =>
    navigate(debuggerPath(model, serializeDebuggerState(next)), options);

  // A URL without the state (e.g. `/<model>/tdb`) gets it written in, so it can be shared.
  useEffect(() => {
    const canonical = serializeDebuggerState(state);
    if (!new URLSearchParams(search).has("prompt")) navigate(debuggerPath(model, canonical), { replace: true });
  }, [search, state, model]);

  const tdb = useAsync(info.data ? requestKey(state) : null, (signal) =>
    api
      .batchedTdb(buildTdbRequest(state), { signal, quiet: true, label: "computing the node table" })
      .then((response) => toTdbView(response, state.ablations.length > 0)),
  );
  const view = tdb.data ?? tdb.previous;

  const explained = useMemo(
    () => (view ? visibleRows(view, state).filter((r) => nodeKind(r.node.nodeType) !== "embedding").slice(0, EXPLAINED_ROWS).map((r) => r.node) : []),
    [view, state],
  );
  const explanations = useExplanations(view ? model : null, explained);

  if (info.error) return <ErrorNote title="Cannot load the model info; nothing else was asked of the server." error={info.error} />;
  if (!info.data) return <Loading>loading the model info…</Loading>;

  const submitPrompt = (input: PromptInput) => setState({ ...state, ...input });

  return (
    <div className="debugger" data-testid="debugger-page">
      <PromptForm
        key={`${state.prompt}\u0000${state.targets.join("\u0001")}\u0000${state.distractors.join("\u0001")}`}
        initial={state}
        committedTokens={tdb.data?.tokens ?? null}
        onSubmit={submitPrompt}
      />
      <DebuggerControls state={state} info={info.data} onChange={setState} />
      <p className="small">
        <Link data-testid="graph-link" href={graphPath(model, graphLinkFor(state))}>
          attribution graph of this prompt
        </Link>
      </p>
      <AblationsAndTrace state={state} tokens={view?.tokens ?? []} onChange={setState} />
      {tdb.error !== undefined && <ErrorNote title="The node table could not be computed:" error={tdb.error} />}
      {tdb.loading && !view && <Loading>computing the node table…</Loading>}
      {view && (
        <div className={tdb.loading ? "stale" : ""} data-testid={tdb.loading ? "results-stale" : "results"}>
          <LossSummary state={state} view={view} />
          <div className="debugger-grid">
            <div className="debugger-main">
              <NodeTable
                view={view}
                state={state}
                model={model}
                explanations={explanations.byKey}
                explanationsUnavailable={explanations.unavailable}
                onChange={setState}
              />
            </div>
            <aside className="debugger-side">
              <LogitsPanel view={view} />
              <TokenSummaryPanel view={view} />
              <LayerSummaryPanel view={view} />
            </aside>
          </div>
        </div>
      )}
    </div>
  );
}
