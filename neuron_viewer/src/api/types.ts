// Short names for the generated wire types (src/client/schema.ts).
import type { components } from "../client/schema";

type Schemas = components["schemas"];

export type ModelInfo = Schemas["ModelInfoResponse"];
export type NodeType = Schemas["NodeType"];
export type MirroredNodeIndex = Schemas["MirroredNodeIndex"];
export type AttentionTraceType = Schemas["AttentionTraceType"];
export type ComponentTypeForMlp = Schemas["ComponentTypeForMlp"];
export type ComponentTypeForAttention = Schemas["ComponentTypeForAttention"];
export type DerivedScalarType = Schemas["DerivedScalarType"];
export type BatchedTdbRequest = Schemas["BatchedTdbRequest"];
export type TdbRequestSpec = Schemas["TdbRequestSpec"];
export type BatchedRequest = Schemas["BatchedRequest"];
export type BatchedResponse = Schemas["BatchedResponse"];
export type SubResponse = Schemas["InferenceResponseAndResponseDict"];
export type ProcessingResponseData = NonNullable<SubResponse["processingResponseDataByName"]>[string];
export type TopKData = Schemas["MultipleTopKDerivedScalarsResponseData"];
export type ScoredTokensData = Schemas["ScoredTokensResponseData"];
export type TokenPairAttributionData = Schemas["TokenPairAttributionResponseData"];
export type DerivedScalarsData = Schemas["DerivedScalarsResponseData"];
export type TensorND = TopKData["intermediateSumActivationsByDstByGroupId"][string][string];
export type TopTokens = Schemas["TopTokens"];
export type TokenAndScalar = Schemas["TokenAndScalar"];
export type TokenAndAttentionScalars = Schemas["TokenAndAttentionScalars"];
export type NeuronRecord = Schemas["NeuronRecordResponse"];
export type AttentionHeadRecord = Schemas["AttentionHeadRecordResponse"];
export type ScoredExplanation = Schemas["AttributedScoredExplanation"];
