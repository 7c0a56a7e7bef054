import { useState, type ChangeEvent } from "react";
import { parseGraphFile, type GraphFile } from "../../graph/graphFile";
import { DEFAULT_REQUEST, type GraphRequestParams } from "../../graph/graphState";
import { formatTokenList, parseTokenList } from "../../state/debuggerState";
import { ErrorNote } from "../Notes";

interface Props {
  initial: GraphRequestParams | null;
  defaultPrompt: string;
  onSubmit: (request: GraphRequestParams) => void;
  onLoad: (graph: GraphFile, fileName: string) => void;
}

function numberOr(text: string, fallback: number, ok: (x: number) => boolean): number {
  const x = Number(text);
  return text.trim() !== "" && Number.isFinite(x) && ok(x) ? x : fallback;
}

/** The prompt and what to explain of its next token (the request's options), or a graph file. */
export function GraphForm({ initial, defaultPrompt, onSubmit, onLoad }: Props) {
  const start = initial ?? { ...DEFAULT_REQUEST, prompt: defaultPrompt };
  const [prompt, setPrompt] = useState(start.prompt);
  const [targets, setTargets] = useState(formatTokenList(start.targets));
  const [distractors, setDistractors] = useState(formatTokenList(start.distractors));
  const [maxFeatures, setMaxFeatures] = useState(String(start.maxFeatureNodes));
  const [serverNode, setServerNode] = useState(String(start.serverThresholds.node));
  const [serverEdge, setServerEdge] = useState(String(start.serverThresholds.edge));
  const [fileError, setFileError] = useState<unknown>(undefined);

  const fraction = (x: number) => x >= 0 && x <= 1;
  const submit = () =>
    onSubmit({
      prompt,
      targets: parseTokenList(targets),
      distractors: parseTokenList(distractors), // without targets the server refuses them, saying why
      maxFeatureNodes: numberOr(maxFeatures, DEFAULT_REQUEST.maxFeatureNodes, (x) => Number.isInteger(x) && x >= 1),
      serverThresholds: {
        node: numberOr(serverNode, DEFAULT_REQUEST.serverThresholds.node, fraction),
        edge: numberOr(serverEdge, DEFAULT_REQUEST.serverThresholds.edge, fraction),
      },
    });

  const load = async (event: ChangeEvent<HTMLInputElement>) => {
    const file = event.target.files?.[0];
    if (!file) return;
    try {
      const graph = parseGraphFile(JSON.parse(await file.text()));
      setFileError(undefined);
      onLoad(graph, file.name);
    } catch (error) {
      setFileError(error);
    }
    event.target.value = ""; // the same file again reloads it
  };

  return (
    <form
      className="card prompt-form"
      data-testid="graph-form"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      <label className="field field-wide">
        <span className="field-label">Prompt</span>
        <textarea data-testid="graph-prompt" rows={2} spellCheck={false} value={prompt} onChange={(e) => setPrompt(e.target.value)} />
      </label>
      <div className="row">
        <label className="field" title="comma-separated tokens; none: the most probable next tokens">
          <span className="field-label">Target logits</span>
          <input data-testid="graph-target" placeholder="top logits" spellCheck={false} value={targets} onChange={(e) => setTargets(e.target.value)} />
        </label>
        <label className="field" title="with targets: explain the logit difference, targets minus distractors">
          <span className="field-label">Distractors</span>
          <input data-testid="graph-distractor" placeholder="none" spellCheck={false} value={distractors} onChange={(e) => setDistractors(e.target.value)} />
        </label>
        <label className="field" title="at most this many active features are attributed (the most influential first)">
          <span className="field-label">Max features</span>
          <input className="narrow" inputMode="numeric" value={maxFeatures} onChange={(e) => setMaxFeatures(e.target.value)} />
        </label>
        <label className="field" title="the server prunes to these node / edge influence fractions before answering; the sliders prune further">
          <span className="field-label">Server prunes to</span>
          <span className="row">
            <input className="narrow" aria-label="server node threshold" value={serverNode} onChange={(e) => setServerNode(e.target.value)} />
            <input className="narrow" aria-label="server edge threshold" value={serverEdge} onChange={(e) => setServerEdge(e.target.value)} />
          </span>
        </label>
        <button type="submit" className="button-primary" data-testid="graph-run">
          Compute graph
        </button>
        <label className="field" title="a graph JSON file: python -m neuron_explainer.graph ... --out graph.json, circuit-tracer or Neuronpedia">
          <span className="field-label">…or load a graph file</span>
          <input type="file" accept=".json,application/json" data-testid="graph-file" onChange={load} />
        </label>
      </div>
      {fileError !== undefined && <ErrorNote title="Cannot load the file:" error={fileError} />}
    </form>
  );
}
