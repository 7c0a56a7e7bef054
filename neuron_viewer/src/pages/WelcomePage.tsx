import { useState } from "react";
import { api } from "../api/client";
import { ApiError } from "../api/errors";
import { useModelInfo } from "../api/hooks";
import type { ModelInfo } from "../api/types";
import { Link } from "../components/Link";
import { ErrorNote, Loading, Section } from "../components/Notes";
import { countByProbing } from "../lib/countNodes";
import { useAsync } from "../lib/useAsync";
import { debuggerPath, graphPath, navigate, nodePagePath, type NodePageType } from "../router";
import { graphLinkFor } from "../graph/graphLinks";
import { DEFAULT_STATE, serializeDebuggerState } from "../state/debuggerState";
import { capitalize, datasetName, nodeTypeName, promptDst } from "../state/nodes";

interface NodeCount {
  nodeType: NodePageType;
  perLayer: number;
  /** Layers that have these nodes (SAEs and transcoders may sit on some layers only). */
  layers: number;
}

/** Whether `index` exists in layer 0: a 400 from the server means out of range. */
async function indexExists(nodeType: NodePageType, index: number, signal: AbortSignal): Promise<boolean> {
  const inferenceRequestSpec = { prompt: "a" };
  const spec = { dst: promptDst(nodeType), layerIndex: 0, activationIndex: index };
  const options = { signal, quiet: true, label: "counting nodes" };
  try {
    if (nodeType === "attention_head") {
      await api.derivedAttentionScalars({ inferenceRequestSpec, derivedAttentionScalarsRequestSpec: spec }, options);
    } else {
      await api.derivedScalars({ inferenceRequestSpec, derivedScalarsRequestSpec: spec }, options);
    }
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 400) return false;
    throw error;
  }
}

export function nodeTypesOf(info: ModelInfo): NodePageType[] {
  return [
    "mlp_neuron",
    "attention_head",
    ...(info.hasMlpAutoencoder ? (["mlp_autoencoder_latent"] as const) : []),
    ...(info.hasAttentionAutoencoder ? (["attention_autoencoder_latent"] as const) : []),
    ...(info.residualAutoencoderLayers?.length ? (["residual_autoencoder_latent"] as const) : []),
    ...(info.transcoderLayers?.length ? (["transcoder_latent"] as const) : []),
  ];
}

/** Widths /model_info reports (the original server's node types it does not). */
function reportedWidth(nodeType: NodePageType, info: ModelInfo): number | null {
  if (nodeType === "residual_autoencoder_latent") return info.nResidualAutoencoderLatents ?? null;
  if (nodeType === "transcoder_latent") return info.nTranscoderLatents ?? null;
  return null;
}

/** The layers that have nodes of this type (SAEs and transcoders may sit on some layers only). */
function layersWith(nodeType: NodePageType, info: ModelInfo): number[] {
  if (nodeType === "residual_autoencoder_latent") return info.residualAutoencoderLayers ?? [];
  if (nodeType === "transcoder_latent") return info.transcoderLayers ?? [];
  return Array.from({ length: info.nLayers }, (_, l) => l);
}

/** Widths /model_info does not report are found by probing which indices exist in layer 0
 * (about 2 log2 n requests). */
function useNodeCounts(info: ModelInfo | undefined) {
  return useAsync(info ? `counts:${datasetName(info)}` : null, async (signal): Promise<NodeCount[]> => {
    const counts: NodeCount[] = [];
    for (const nodeType of nodeTypesOf(info as ModelInfo)) {
      const width = reportedWidth(nodeType, info as ModelInfo);
      const perLayer = width ?? (await countByProbing((i) => indexExists(nodeType, i, signal)));
      counts.push({ nodeType, perLayer, layers: layersWith(nodeType, info as ModelInfo).length });
    }
    return counts;
  });
}

function NodeSearch({ model, info }: { model: string; info: ModelInfo }) {
  const types = nodeTypesOf(info);
  const [nodeType, setNodeType] = useState<NodePageType>("mlp_neuron");
  const [layer, setLayer] = useState(0);
  const [index, setIndex] = useState("0");
  const valid = /^\d+$/.test(index);
  return (
    <form
      className="row"
      data-testid="node-search"
      onSubmit={(e) => {
        e.preventDefault();
        if (valid) navigate(nodePagePath(model, nodeType, layer, Number(index)));
      }}
    >
      <select
        aria-label="node type"
        value={nodeType}
        onChange={(e) => {
          const next = e.target.value as NodePageType;
          const layers = layersWith(next, info);
          setNodeType(next);
          if (!layers.includes(layer)) setLayer(layers[0] ?? 0);
        }}
      >
        {types.map((t) => (
          <option key={t} value={t}>
            {nodeTypeName(t)}
          </option>
        ))}
      </select>
      <label className="field-inline">
        layer
        <select aria-label="layer" value={layer} onChange={(e) => setLayer(Number(e.target.value))}>
          {layersWith(nodeType, info).map((l) => (
            <option key={l} value={l}>
              {l}
            </option>
          ))}
        </select>
      </label>
      <label className="field-inline">
        index
        <input aria-label="index" className="narrow" inputMode="numeric" value={index} onChange={(e) => setIndex(e.target.value.trim())} />
      </label>
      <button type="submit" className="button-primary" disabled={!valid}>
        Open node page
      </button>
    </form>
  );
}

function ModelSummary({ info }: { info: ModelInfo }) {
  const counts = useNodeCounts(info);
  return (
    <Section title={`Model: ${info.modelName ?? "unnamed"}`} testId="model-summary">
      <dl className="facts">
        <dt>Layers</dt>
        <dd data-testid="n-layers">{info.nLayers}</dd>
        <dt>MLP autoencoder</dt>
        <dd>{info.hasMlpAutoencoder ? info.mlpAutoencoderName : "none"}</dd>
        <dt>Attention autoencoder</dt>
        <dd>{info.hasAttentionAutoencoder ? info.attentionAutoencoderName : "none"}</dd>
        {counts.data?.map((c) => (
          <div key={c.nodeType} className="fact" data-testid={`count-${c.nodeType}`}>
            <dt>{capitalize(nodeTypeName(c.nodeType))}s</dt>
            <dd>
              {c.perLayer} per layer, {c.perLayer * c.layers} in all{c.layers < info.nLayers && ` (${c.layers} layers)`}
            </dd>
          </div>
        ))}
      </dl>
      {counts.loading && <Loading>counting nodes…</Loading>}
      {counts.error !== undefined && <ErrorNote title="Could not count the nodes:" error={counts.error} />}
    </Section>
  );
}

function Datasets() {
  const datasets = useAsync("datasets", (signal) => api.neuronDatasetsMetadata({ signal, quiet: true }));
  return (
    <Section title="Neuron datasets" testId="datasets">
      {datasets.error !== undefined && <ErrorNote title="Could not list the datasets:" error={datasets.error} />}
      {datasets.data?.length === 0 && <p className="muted">No neuron datasets are registered with this server: node pages show no dataset examples.</p>}
      <ul>
        {datasets.data?.map((d) => (
          <li key={d.shortName}>
            <strong>{d.userVisibleName}</strong> <span className="muted">({d.shortName}, {d.derivedScalarType})</span>
          </li>
        ))}
      </ul>
    </Section>
  );
}

export function WelcomePage() {
  const info = useModelInfo();
  if (info.error) return <ErrorNote title="Cannot load the model info:" error={info.error} />;
  if (!info.data) return <Loading>loading the model info…</Loading>;
  const model = datasetName(info.data);
  return (
    <div className="welcome" data-testid="welcome-page">
      <Section title="Transformer Debugger" testId="welcome-intro">
        <p>
          Give a prompt, a target token and a distractor token; the debugger ranks every node by how much it pushes the logit difference, lets you
          ablate nodes and trace a node upstream.
        </p>
        <p>
          <Link className="button-primary" data-testid="example-link" href={debuggerPath(model, serializeDebuggerState(DEFAULT_STATE))}>
            Open the debugger on an example prompt
          </Link>{" "}
          <span className="muted small">({JSON.stringify(DEFAULT_STATE.prompt)}: “{DEFAULT_STATE.targets[0]}” vs “{DEFAULT_STATE.distractors[0]}”)</span>
        </p>
        <p>
          <Link data-testid="graph-link" href={graphPath(model, graphLinkFor(DEFAULT_STATE))}>
            Attribution graph of the example prompt
          </Link>{" "}
          <span className="muted small">
            (which transcoder features carry the prediction, token by token and layer by layer; needs a server with transcoders{info.data.transcoderLayers?.length ? "" : ", which this one has not"})
          </span>
        </p>
      </Section>
      <ModelSummary info={info.data} />
      <Section title="Find a node" testId="find-node">
        <NodeSearch model={model} info={info.data} />
      </Section>
      <Datasets />
    </div>
  );
}
