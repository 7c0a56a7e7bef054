import type { DerivedScalarType } from "../../api/types";
import type { NodePageType } from "../../router";
import { promptDst, recordDst } from "../../state/nodes";

/** Which node a node page is about, with the names the server's routes want. */
export interface NodeId {
  dataset: string;
  nodeType: NodePageType;
  layer: number;
  index: number;
  /** dst of the records and explanations. */
  dst: DerivedScalarType;
  /** dst computed on a typed prompt. */
  promptDst: DerivedScalarType;
  /** Changes whenever any of the above does (a key for fetching). */
  key: string;
}

export function makeNodeId(dataset: string, nodeType: NodePageType, layer: number, index: number): NodeId {
  return {
    dataset,
    nodeType,
    layer,
    index,
    dst: recordDst(nodeType),
    promptDst: promptDst(nodeType),
    key: `${dataset}/${nodeType}/${layer}/${index}`,
  };
}
