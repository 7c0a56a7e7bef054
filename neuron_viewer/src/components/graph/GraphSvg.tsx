import { memo, type MouseEvent } from "react";
import { graphNodeKind, type GraphLink, type GraphNode, type GraphNodeKind } from "../../graph/graphFile";
import type { Supernode } from "../../graph/graphState";
import type { GraphLayout, Point } from "../../graph/layout";
import { showToken } from "../../state/nodes";

const POSITIVE = "#2563eb";
const NEGATIVE = "#dc2626";
const R = 5;

interface Props {
  nodes: GraphNode[];
  links: GraphLink[];
  layout: GraphLayout;
  focusId: string | null;
  pinned: ReadonlySet<string>;
  supernodes: Supernode[];
  onFocus: (node: GraphNode) => void;
  onClick: (node: GraphNode, event: MouseEvent) => void;
}

/** |weight| relative to the largest: decides width and opacity. */
function strength(weight: number, max: number): number {
  return max > 0 ? Math.min(1, Math.abs(weight) / max) : 0;
}

/** A link as a curve rising from its source to its target. */
function linkPath(from: Point, to: Point): string {
  const dy = (to.y - from.y) / 2;
  return `M${from.x},${from.y} C${from.x},${from.y + dy} ${to.x},${to.y - dy} ${to.x},${to.y}`;
}

const Links = memo(function Links({ links, layout, max, emphasized }: { links: GraphLink[]; layout: GraphLayout; max: number; emphasized: boolean }) {
  return (
    <g className={emphasized ? "graph-links-focus" : "graph-links"}>
      {links.map((l) => {
        const from = layout.positions.get(l.source);
        const to = layout.positions.get(l.target);
        if (!from || !to) return null;
        const s = strength(l.weight, max);
        return (
          <path
            key={`${l.source}>${l.target}`}
            data-testid="graph-edge"
            d={linkPath(from, to)}
            fill="none"
            stroke={l.weight >= 0 ? POSITIVE : NEGATIVE}
            strokeWidth={0.4 + 3.6 * s}
            strokeOpacity={emphasized ? 0.35 + 0.65 * s : 0.08 + 0.5 * s}
          >
            <title>{`${l.source} → ${l.target}: ${l.weight.toPrecision(3)}`}</title>
          </path>
        );
      })}
    </g>
  );
});

function NodeShape({ kind, p, className }: { kind: GraphNodeKind; p: Point; className: string }) {
  switch (kind) {
    case "error": // a square: what the transcoder does not explain
      return <rect className={className} x={p.x - R} y={p.y - R} width={2 * R} height={2 * R} />;
    case "embedding":
    case "logit":
      return <rect className={className} x={p.x - R - 2} y={p.y - R} width={2 * R + 4} height={2 * R} rx={2} />;
    default:
      return <circle className={className} cx={p.x} cy={p.y} r={R} />;
  }
}

function SupernodeBox({ group, layout }: { group: Supernode; layout: GraphLayout }) {
  const points = group.members.map((id) => layout.positions.get(id)).filter((p): p is Point => p !== undefined);
  if (points.length === 0) return null;
  const pad = R + 5;
  const x0 = Math.min(...points.map((p) => p.x)) - pad;
  const x1 = Math.max(...points.map((p) => p.x)) + pad;
  const y0 = Math.min(...points.map((p) => p.y)) - pad;
  const y1 = Math.max(...points.map((p) => p.y)) + pad;
  return (
    <g className="supernode-box" data-testid="supernode-box">
      <rect x={x0} y={y0} width={x1 - x0} height={y1 - y0} rx={6} />
      <text x={x0} y={y0 - 3}>
        {group.name}
      </text>
    </g>
  );
}

/** The graph: token columns, layer rows (embeddings at the bottom, logits on top), links coloured
 * by sign (blue positive, red negative) with width and opacity by |weight|. */
export function GraphSvg({ nodes, links, layout, focusId, pinned, supernodes, onFocus, onClick }: Props) {
  const max = links.reduce((m, l) => Math.max(m, Math.abs(l.weight)), 0);
  const focused = focusId === null ? [] : links.filter((l) => l.source === focusId || l.target === focusId);
  const grouped = new Set(supernodes.flatMap((g) => g.members));
  return (
    <svg className="graph-svg" data-testid="graph-svg" width={layout.width} height={layout.height} role="img" aria-label="attribution graph">
      <g className="graph-grid">
        {layout.rows.map((r) => (
          <g key={r.label}>
            <line x1={0} x2={layout.width} y1={r.y} y2={r.y} />
            <text x={4} y={r.y + 4}>
              {r.label}
            </text>
          </g>
        ))}
        {layout.columns.map((c) => (
          <text key={c.ctx} className="graph-token" x={c.x} y={layout.height - 20} textAnchor="middle">
            <title>{`token ${c.ctx}: ${JSON.stringify(c.token)}`}</title>
            {showToken(c.token).slice(0, Math.max(3, Math.floor(layout.columnWidth / 7)))}
          </text>
        ))}
      </g>
      <Links links={links} layout={layout} max={max} emphasized={false} />
      {focused.length > 0 && <Links links={focused} layout={layout} max={max} emphasized />}
      {supernodes.map((g) => (
        <SupernodeBox key={g.name} group={g} layout={layout} />
      ))}
      <g className="graph-nodes">
        {nodes.map((n) => {
          const p = layout.positions.get(n.node_id);
          if (!p) return null;
          const kind = graphNodeKind(n);
          const classes = [`graph-node-${kind}`, pinned.has(n.node_id) ? "pinned" : "", grouped.has(n.node_id) ? "grouped" : "", focusId === n.node_id ? "focused" : ""];
          return (
            <g
              key={n.node_id}
              className="graph-node"
              data-testid="graph-node"
              data-node-id={n.node_id}
              data-kind={kind}
              onMouseEnter={() => onFocus(n)}
              onClick={(e) => onClick(n, e)}
            >
              <NodeShape kind={kind} p={p} className={classes.filter(Boolean).join(" ")} />
            </g>
          );
        })}
      </g>
    </svg>
  );
}
