import { useMemo, useState, type MouseEvent } from "react";
import { api } from "../api/client";
import { GraphForm } from "../components/graph/GraphForm";
import { GraphNodePanel } from "../components/graph/GraphNodePanel";
import { GraphSvg } from "../components/graph/GraphSvg";
import { PinnedPanel } from "../components/graph/PinnedPanel";
import { PruneSliders } from "../components/graph/PruneSliders";
import { ErrorNote, Loading } from "../components/Notes";
import { layerCount, type GraphFile, type GraphNode } from "../graph/graphFile";
import { ablateInDebuggerPath, graphNodePagePath } from "../graph/graphLinks";
import {
  buildGraphRequest,
  graphRequestKey,
  groupNodes,
  parseGraphState,
  serializeGraphState,
  togglePin,
  ungroup,
  viewFromQParams,
  type GraphPageState,
  type GraphRequestParams,
  type GraphViewState,
} from "../graph/graphState";
import { layoutGraph } from "../graph/layout";
import { pruneGraph } from "../graph/prune";
import { useAsync } from "../lib/useAsync";
import { graphPath, navigate, useLocation } from "../router";
import { EXAMPLE_PROMPT } from "../state/debuggerState";

type GraphResponse = Awaited<ReturnType<typeof api.attributionGraph>>;

// The last few graphs by request: coming back from a node page or the debugger does not
// recompute one (seconds of backward passes).
const recentGraphs = new Map<string, GraphResponse>();
const RECENT_GRAPHS = 4;

async function computeGraph(key: string, request: GraphRequestParams, signal: AbortSignal): Promise<GraphResponse> {
  const known = recentGraphs.get(key);
  if (known) return known;
  const response = await api.attributionGraph(buildGraphRequest(request), { signal, quiet: true, label: "computing the attribution graph" });
  recentGraphs.set(key, response);
  for (const old of [...recentGraphs.keys()].slice(0, -RECENT_GRAPHS)) recentGraphs.delete(old);
  return response;
}

/** An attribution graph: computed by the server for the prompt in the URL, or loaded from a file. */
export function GraphPage({ model }: { model: string }) {
  const { search } = useLocation();
  const state = useMemo(() => parseGraphState(search), [search]);
  const [loaded, setLoaded] = useState<{ graph: GraphFile; name: string } | null>(null);
  const [focusId, setFocusId] = useState<string | null>(null);

  const setState = (next: GraphPageState, options: { replace?: boolean } = {}) => navigate(graphPath(model, serializeGraphState(next)), options);
  const setView = (view: GraphViewState) => setState({ ...state, view }, { replace: true });

  const key = loaded ? null : graphRequestKey(state.request);
  const result = useAsync(key, (signal) => computeGraph(key as string, state.request as GraphRequestParams, signal));
  const graph = loaded?.graph ?? result.data?.graph ?? null;

  const pruned = useMemo(() => (graph ? pruneGraph(graph, state.view.thresholds) : null), [graph, state.view.thresholds]);
  const layout = useMemo(
    () => (graph && pruned ? layoutGraph(pruned.nodes, graph.metadata.prompt_tokens, layerCount(graph)) : null),
    [graph, pruned],
  );
  const byId = useMemo(() => new Map((graph?.nodes ?? []).map((n) => [n.node_id, n])), [graph]);
  const focus = focusId ? (byId.get(focusId) ?? null) : null;
  // the debugger ablation keeps the target and distractor the graph was asked for
  const asked = loaded ? undefined : (state.request ?? undefined);

  const onClick = (node: GraphNode, event: MouseEvent) => {
    if (event.shiftKey) return setView(togglePin(state.view, node.node_id));
    const page = graph ? graphNodePagePath(model, graph, node) : null;
    if (page) navigate(page);
    else setFocusId(node.node_id); // embeddings, logits, errors: their facts in the panel
  };

  return (
    <div className="graph-page" data-testid="graph-page">
      <GraphForm
        key={graphRequestKey(state.request) ?? "no request"}
        initial={state.request}
        defaultPrompt={EXAMPLE_PROMPT}
        onSubmit={(request) => {
          setLoaded(null);
          // node ids are per prompt: another prompt's pins would name other nodes
          const samePrompt = request.prompt === state.request?.prompt;
          setState({ request, view: samePrompt ? state.view : { ...state.view, pinned: [], supernodes: [] } });
        }}
        onLoad={(file, name) => {
          setLoaded({ graph: file, name });
          setFocusId(null);
          setState({ request: null, view: viewFromQParams(file.qParams, state.view) });
        }}
      />
      {loaded && (
        <p className="muted small" data-testid="loaded-file">
          Showing {loaded.name} ({loaded.graph.metadata.prompt}); its link does not re-create it.{" "}
        </p>
      )}
      {!graph && !state.request && !loaded && <p className="muted">Give a prompt, or load a graph file.</p>}
      {result.loading && <Loading>computing the attribution graph (several seconds on a CPU)…</Loading>}
      {result.error !== undefined && <ErrorNote title="The graph could not be computed:" error={result.error} />}
      {graph && pruned && layout && (
        <>
          <PruneSliders
            thresholds={state.view.thresholds}
            shown={{ nodes: pruned.nodes.length, links: pruned.links.length }}
            total={{ nodes: graph.nodes.length, links: graph.links.length }}
            onChange={(thresholds) => setView({ ...state.view, thresholds })}
          />
          <div className="graph-grid-layout">
            <div className="graph-scroll card">
              <GraphSvg
                nodes={pruned.nodes}
                links={pruned.links}
                layout={layout}
                focusId={focusId}
                pinned={new Set(state.view.pinned)}
                supernodes={state.view.supernodes}
                onFocus={(n) => setFocusId(n.node_id)}
                onClick={onClick}
              />
              <p className="muted small">
                Rows: embeddings (bottom), layers, logits (top); columns: tokens. Circles: transcoder features; squares: MLP reconstruction errors.
                Links: blue raises, red lowers; width by |weight|. Hover a node for its examples; click a feature for its node page; shift-click
                pins.
              </p>
            </div>
            <aside className="graph-side">
              {focus ? (
                <GraphNodePanel
                  graph={graph}
                  node={focus}
                  dataset={model}
                  pinned={state.view.pinned.includes(focus.node_id)}
                  nodePage={graphNodePagePath(model, graph, focus)}
                  ablateLink={ablateInDebuggerPath(model, graph, focus, asked)}
                  onTogglePin={() => setView(togglePin(state.view, focus.node_id))}
                />
              ) : (
                <p className="muted card">Hover a node to see it here.</p>
              )}
              <PinnedPanel
                pinned={state.view.pinned}
                supernodes={state.view.supernodes}
                byId={byId}
                promptTokens={graph.metadata.prompt_tokens}
                onFocus={setFocusId}
                onUnpin={(id) => setView(togglePin(state.view, id))}
                onGroup={(name, members) => setView(groupNodes(state.view, name, members))}
                onUngroup={(name) => setView(ungroup(state.view, name))}
              />
            </aside>
          </div>
        </>
      )}
    </div>
  );
}
