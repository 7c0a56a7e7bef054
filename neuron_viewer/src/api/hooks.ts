import { useEffect, useMemo, useState } from "react";
import { createLimiter } from "../lib/limit";
import { useAsync, type AsyncState } from "../lib/useAsync";
import { nodeKey, recordDst, type NodeRef, nodePageType, componentIndex } from "../state/nodes";
import { api } from "./client";
import { ApiError } from "./errors";
import type { ModelInfo, ScoredExplanation } from "./types";

let modelInfo: Promise<ModelInfo> | null = null;

/** /model_info, asked once per page load (a failure is retried on the next mount). */
export function useModelInfo(): AsyncState<ModelInfo> {
  return useAsync("model_info", () => {
    modelInfo ??= api.modelInfo({ label: "loading the model info" }).catch((error: unknown) => {
      modelInfo = null;
      throw error;
    });
    return modelInfo;
  });
}

export type ExplanationLookup =
  | { status: "found"; best: ScoredExplanation }
  | { status: "none" }
  | { status: "error"; message: string };

const lookups = new Map<string, Promise<ExplanationLookup>>();
const unavailableByDataset = new Map<string, ApiError>();
const limit = createLimiter(2); // as the original client: at most 2 at a time

function lookUp(dataset: string, node: NodeRef): Promise<ExplanationLookup> {
  const type = nodePageType(node.nodeType);
  const index = componentIndex(node);
  if (!type || node.layerIndex === null || index === null) return Promise.resolve({ status: "none" });
  const id = `${dataset}|${type}|${node.layerIndex}|${index}`;
  let lookup = lookups.get(id);
  if (!lookup) {
    lookup = limit(async (): Promise<ExplanationLookup> => {
      const down = unavailableByDataset.get(dataset);
      if (down) return { status: "error", message: down.message };
      try {
        const found = await api.existingExplanations(
          { dst: recordDst(type), layerIndex: node.layerIndex as number, activationIndex: index, explanationDatasets: [], neuronDataset: dataset },
          { quiet: true, label: "looking up explanations" },
        );
        const best = [...found].sort((a, b) => (b.score ?? -Infinity) - (a.score ?? -Infinity))[0];
        return best ? { status: "found", best } : { status: "none" };
      } catch (error) {
        // 503: explanations are not served at all: stop asking for this dataset
        if (error instanceof ApiError && error.status === 503) unavailableByDataset.set(dataset, error);
        return { status: "error", message: error instanceof Error ? error.message : String(error) };
      }
    });
    lookups.set(id, lookup);
  }
  return lookup;
}

/**
 * Existing explanations for the given nodes (the table's first rows), looked up 2 at a time
 * and cached. `unavailable` is set when the server does not serve explanations at all.
 */
export function useExplanations(dataset: string | null, nodes: NodeRef[]): {
  byKey: Map<string, ExplanationLookup>;
  unavailable: string | null;
} {
  const [byKey, setByKey] = useState(() => new Map<string, ExplanationLookup>());
  const [unavailable, setUnavailable] = useState<string | null>(null);
  const wanted = useMemo(() => nodes.map((node) => ({ key: nodeKey(node), node })), [nodes]);
  useEffect(() => {
    if (!dataset) return;
    let live = true;
    for (const { key, node } of wanted) {
      lookUp(dataset, node).then((result) => {
        if (!live) return;
        setByKey((prev) => (prev.get(key) === result ? prev : new Map(prev).set(key, result)));
        const down = unavailableByDataset.get(dataset);
        if (down) setUnavailable(down.message);
      });
    }
    return () => {
      live = false;
    };
  }, [dataset, wanted]);
  return { byKey, unavailable };
}
