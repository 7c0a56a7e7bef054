import { useState } from "react";
import { graphNodeLabel, type GraphNode } from "../../graph/graphFile";
import type { Supernode } from "../../graph/graphState";

interface Props {
  pinned: string[];
  supernodes: Supernode[];
  byId: ReadonlyMap<string, GraphNode>;
  promptTokens: readonly string[];
  onFocus: (id: string) => void;
  onUnpin: (id: string) => void;
  onGroup: (name: string, members: string[]) => void;
  onUngroup: (name: string) => void;
}

/** Pinned nodes (tick some, name them, group them into a supernode) and the supernodes. */
export function PinnedPanel({ pinned, supernodes, byId, promptTokens, onFocus, onUnpin, onGroup, onUngroup }: Props) {
  const [chosen, setChosen] = useState<ReadonlySet<string>>(new Set());
  const [name, setName] = useState("");
  const label = (id: string) => {
    const node = byId.get(id);
    return node ? `${graphNodeLabel(node, promptTokens)} @${node.ctx_idx}` : `${id} (pruned away)`;
  };
  const members = pinned.filter((id) => chosen.has(id));
  const toggle = (id: string) => {
    const next = new Set(chosen);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setChosen(next);
  };
  return (
    <section className="card" data-testid="pinned-panel">
      <header className="card-header">
        <h2>Pinned nodes</h2>
      </header>
      {pinned.length === 0 && <p className="muted small">Pin nodes from the panel above (or shift-click them) to group them into supernodes.</p>}
      <ul className="pinned-list" data-testid="pinned-list">
        {pinned.map((id) => (
          <li key={id} data-testid="pinned-node" data-node-id={id}>
            <label>
              <input type="checkbox" checked={chosen.has(id)} onChange={() => toggle(id)} />{" "}
              <button type="button" className="link-button" onClick={() => onFocus(id)}>
                {label(id)}
              </button>
            </label>{" "}
            <button type="button" className="link-button" onClick={() => onUnpin(id)}>
              unpin
            </button>
          </li>
        ))}
      </ul>
      {pinned.length > 0 && (
        <form
          className="row"
          onSubmit={(e) => {
            e.preventDefault();
            onGroup(name, members);
            setChosen(new Set());
            setName("");
          }}
        >
          <input data-testid="supernode-name" placeholder="supernode name" value={name} onChange={(e) => setName(e.target.value)} />
          <button type="submit" data-testid="group-button" disabled={members.length === 0 || !name.trim()}>
            group {members.length} into a supernode
          </button>
        </form>
      )}
      {supernodes.length > 0 && (
        <ul className="supernodes" data-testid="supernodes">
          {supernodes.map((g) => (
            <li key={g.name} data-testid="supernode">
              <strong>{g.name}</strong>: {g.members.map(label).join(", ")}{" "}
              <button type="button" className="link-button" onClick={() => onUngroup(g.name)}>
                ungroup
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
