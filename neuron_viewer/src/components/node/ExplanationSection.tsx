import { useState } from "react";
import { api } from "../../api/client";
import type { ScoredExplanation } from "../../api/types";
import { useAsync } from "../../lib/useAsync";
import { formatNumber } from "../../lib/format";
import { ErrorNote, Loading, Section } from "../Notes";
import type { NodeId } from "./nodeId";

type Action = { kind: "idle" } | { kind: "running"; what: string } | { kind: "error"; what: string; error: unknown };

/** Stored explanations with their scores; buttons to generate one (/explain) and score it (/score). */
export function ExplanationSection({ id }: { id: NodeId }) {
  const existing = useAsync(id.key, (signal) =>
    api.existingExplanations(
      { dst: id.dst, layerIndex: id.layer, activationIndex: id.index, explanationDatasets: [], neuronDataset: id.dataset },
      { signal, quiet: true, label: "loading explanations" },
    ),
  );
  const [generated, setGenerated] = useState<ScoredExplanation[]>([]);
  const [action, setAction] = useState<Action>({ kind: "idle" });
  const node = { dst: id.dst, layerIndex: id.layer, activationIndex: id.index, datasets: [id.dataset] };

  const generate = async () => {
    setAction({ kind: "running", what: "generating an explanation" });
    try {
      const result = await api.explain(node, { quiet: true, label: "generating an explanation" });
      setGenerated((prev) => [...result.explanations.map((explanation) => ({ explanation, score: null, datasetName: result.dataset })), ...prev]);
      setAction({ kind: "idle" });
    } catch (error) {
      setAction({ kind: "error", what: "Generating an explanation failed:", error });
    }
  };
  const score = async (explanation: string) => {
    setAction({ kind: "running", what: "scoring the explanation" });
    try {
      const result = await api.score({ ...node, explanation, maxSequences: 2 }, { quiet: true, label: "scoring the explanation" });
      setGenerated((prev) => prev.map((e) => (e.explanation === explanation ? { ...e, score: result.score } : e)));
      setAction({ kind: "idle" });
    } catch (error) {
      setAction({ kind: "error", what: "Scoring failed:", error });
    }
  };

  const all = [...generated, ...(existing.data ?? [])];
  return (
    <Section
      title="Explanation"
      testId="explanation"
      actions={
        <button type="button" data-testid="generate-explanation" disabled={action.kind === "running"} onClick={generate}>
          Generate explanation
        </button>
      }
    >
      {existing.loading && <Loading>loading explanations…</Loading>}
      {existing.error !== undefined && <ErrorNote title="No stored explanations for this node:" error={existing.error} />}
      {existing.data && all.length === 0 && <p className="muted">No explanation stored for this node yet.</p>}
      {all.length > 0 && (
        <ul className="explanations">
          {all.map((e, i) => (
            <li key={i}>
              <span className="explanation-text">{e.explanation}</span>{" "}
              <span className="muted small">
                {e.score === null || e.score === undefined ? "not scored" : `score ${formatNumber(e.score)}`} · {e.datasetName}
              </span>{" "}
              {(e.score === null || e.score === undefined) && (
                <button type="button" className="link-button" disabled={action.kind === "running"} onClick={() => score(e.explanation)}>
                  score it
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      {action.kind === "running" && <Loading>{action.what}…</Loading>}
      {action.kind === "error" && <ErrorNote title={action.what} error={action.error} />}
    </Section>
  );
}
