/**
 * Generated from the activation server's OpenAPI document by `npm run generate-client`
 * (openapi-typescript). Do not edit: change neuron_explainer/activation_server/schemas.py or
 * main.py and regenerate; `npm run check-client` fails while this file is stale.
 */

export interface paths {
    "/": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Read Root */
        get: operations["hello_world-read_root"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/attention_head_record": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Attention Head Record */
        post: operations["read-attention_head_record"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/attribution_graph": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Attribution Graph
         * @description The attribution graph of the prompt's next token (see AttributionGraphRequest for the
         *     targets), pruned by node and edge influence (circuit-tracer's definitions).
         */
        post: operations["graph-attribution_graph"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/batched": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Batched */
        post: operations["inference-batched"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/batched_tdb": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Batched Tdb */
        post: operations["inference-batched_tdb"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/derived_attention_scalars": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Derived Attention Scalars */
        post: operations["inference-derived_attention_scalars"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/derived_scalars": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Derived Scalars */
        post: operations["inference-derived_scalars"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/existing_explanations": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Existing Explanations */
        post: operations["read-existing_explanations"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/explain": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Explain */
        post: operations["explainer-explain"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/force_client_code_generation": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Force Client Code Generation
         * @description Only here so the generated client includes GroupId.
         */
        get: operations["hello_world-force_client_code_generation"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/model_info": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Model Info */
        post: operations["inference-model_info"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/multiple_top_k_derived_scalars": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Multiple Top K Derived Scalars */
        post: operations["inference-multiple_top_k_derived_scalars"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/neuron_datasets_metadata": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Neuron Datasets Metadata */
        post: operations["read-neuron_datasets_metadata"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/neuron_record": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Neuron Record */
        post: operations["read-neuron_record"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/score": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Score */
        post: operations["explainer-score"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
}
export type webhooks = Record<string, never>;
export interface components {
    schemas: {
        /**
         * AblationSpec
         * @description Overwrite the activation(s) at ``index`` with ``value`` during inference.
         */
        AblationSpec: {
            index: components["schemas"]["MirroredActivationIndex"];
            /** Value */
            value: number;
        };
        /**
         * ActivationLocationType
         * @description Named activation tensors recorded during a forward pass.
         * @enum {string}
         */
        ActivationLocationType: "resid.post_emb" | "resid.delta_attn" | "resid.post_attn" | "resid.delta_mlp" | "resid.post_mlp" | "resid.post_mlp_ln" | "resid.post_attn_ln" | "resid.post_ln_f" | "mlp_ln.scale" | "attn_ln.scale" | "resid.ln_f.scale" | "attn.q" | "attn.k" | "attn.v" | "attn.qk_logits" | "attn.qk_probs" | "attn.v_out" | "mlp.pre_act" | "mlp.post_act" | "logits" | "online_autoencoder_latent" | "online_mlp_autoencoder_latent" | "online_attention_autoencoder_latent" | "online_residual_autoencoder_latent" | "online_transcoder_latent" | "online_mlp_autoencoder_error" | "online_residual_mlp_autoencoder_error" | "online_residual_attention_autoencoder_error";
        /**
         * AttentionHeadRecordResponse
         * @description Response of /attention_head_record: top and random sequences with attention scalars.
         */
        AttentionHeadRecordResponse: {
            /** Dataset */
            dataset: string;
            /** Maxattentionactivation */
            maxAttentionActivation: number;
            /** Mostpositivetokensequences */
            mostPositiveTokenSequences: components["schemas"]["TokenAndAttentionScalars"][][];
            /** Randomtokensequences */
            randomTokenSequences: components["schemas"]["TokenAndAttentionScalars"][][];
        };
        /**
         * AttentionTraceType
         * @description Which part of an attention head a gradient is traced through.
         * @enum {string}
         */
        AttentionTraceType: "Q" | "K" | "QK" | "V";
        /**
         * AttributedScoredExplanation
         * @description One stored explanation with its score (None if undefined) and source dataset name.
         */
        AttributedScoredExplanation: {
            /** Datasetname */
            datasetName: string;
            /** Explanation */
            explanation: string;
            /** Score */
            score?: number | null;
        };
        /** AttributionGraphFile */
        AttributionGraphFile: {
            /** Links */
            links: components["schemas"]["AttributionGraphLink"][];
            metadata: components["schemas"]["AttributionGraphMetadata"];
            /** Nodes */
            nodes: components["schemas"]["AttributionGraphNode"][];
            qParams: components["schemas"]["AttributionGraphQParams"];
        } & {
            [key: string]: unknown;
        };
        /** AttributionGraphLink */
        AttributionGraphLink: {
            /** Source */
            source: string;
            /** Target */
            target: string;
            /** Weight */
            weight: number;
        } & {
            [key: string]: unknown;
        };
        /** AttributionGraphMetadata */
        AttributionGraphMetadata: {
            /** Feature Details */
            feature_details?: {
                [key: string]: unknown;
            } | null;
            /** Generation Settings */
            generation_settings?: {
                [key: string]: unknown;
            } | null;
            /** Info */
            info?: {
                [key: string]: unknown;
            } | null;
            /** Node Threshold */
            node_threshold?: number | null;
            /** Prompt */
            prompt: string;
            /** Prompt Tokens */
            prompt_tokens: string[];
            /** Pruning Settings */
            pruning_settings?: {
                [key: string]: unknown;
            } | null;
            /** Scan */
            scan: string;
            /**
             * Schema Version
             * @default 1
             */
            schema_version?: number | null;
            /** Slug */
            slug: string;
            /** Transcoder List */
            transcoder_list?: string[];
        } & {
            [key: string]: unknown;
        };
        /** AttributionGraphNode */
        AttributionGraphNode: {
            /** Activation */
            activation?: number | null;
            /**
             * Clerp
             * @default
             */
            clerp?: string;
            /** Ctx Idx */
            ctx_idx: number;
            /** Feature */
            feature: number | null;
            /** Feature Type */
            feature_type: string;
            /** Influence */
            influence?: number | null;
            /**
             * Is Target Logit
             * @default false
             */
            is_target_logit?: boolean;
            /** Jsnodeid */
            jsNodeId: string;
            /** Latent Index */
            latent_index?: number | null;
            /** Layer */
            layer: string | number;
            /** Node Id */
            node_id: string;
            /**
             * Reverse Ctx Idx
             * @default 0
             */
            reverse_ctx_idx?: number;
            /**
             * Run Idx
             * @default 0
             */
            run_idx?: number;
            /** Token */
            token?: string | null;
            /** Token Id */
            token_id?: number | null;
            /**
             * Token Prob
             * @default 0
             */
            token_prob?: number;
        } & {
            [key: string]: unknown;
        };
        /** AttributionGraphQParams */
        AttributionGraphQParams: {
            /**
             * Clickedid
             * @default
             */
            clickedId?: string;
            /**
             * Linktype
             * @default both
             */
            linkType?: string;
            /** Pinnedids */
            pinnedIds?: string[];
            /**
             * Sg Pos
             * @default
             */
            sg_pos?: string;
            /** Supernodes */
            supernodes?: string[][];
        } & {
            [key: string]: unknown;
        };
        /**
         * AttributionGraphRequest
         * @description Body of /attribution_graph: a prompt and what to explain of its next token.
         *
         *     The target: no `targetTokens`, the top logits (as many as reach `desiredLogitProb` of the
         *     probability, at most `maxNLogits`); `targetTokens` alone, those logits; with
         *     `distractorTokens`, the debugger's logit difference (mean of the targets' logits minus the
         *     mean of the distractors'). Each token must be a single token of the vocabulary.
         */
        AttributionGraphRequest: {
            /**
             * Batchsize
             * @default 256
             */
            batchSize?: number;
            /**
             * Desiredlogitprob
             * @default 0.95
             */
            desiredLogitProb?: number;
            /** Distractortokens */
            distractorTokens?: string[] | null;
            /**
             * Edgethreshold
             * @default 0.98
             */
            edgeThreshold?: number;
            /**
             * Maxfeaturenodes
             * @default 7500
             */
            maxFeatureNodes?: number;
            /**
             * Maxnlogits
             * @default 10
             */
            maxNLogits?: number;
            /**
             * Nodethreshold
             * @default 0.8
             */
            nodeThreshold?: number;
            /**
             * Prependbos
             * @default true
             */
            prependBos?: boolean;
            /** Prompt */
            prompt: string;
            /** Slug */
            slug?: string | null;
            /** Targettokens */
            targetTokens?: string[] | null;
        };
        /**
         * AttributionGraphResponse
         * @description Response of /attribution_graph: the pruned graph in Neuronpedia's graph JSON (its field
         *     names as the format has them), seconds per stage, and counts.
         */
        AttributionGraphResponse: {
            graph: components["schemas"]["AttributionGraphFile"];
            /** Nactivefeatures */
            nActiveFeatures: number;
            /** Nbackwardpasses */
            nBackwardPasses: number;
            /** Nfeaturenodes */
            nFeatureNodes: number;
            /** Timings */
            timings: {
                [key: string]: number;
            };
        };
        /**
         * BatchedRequest
         * @description Body of /batched: sub-requests run together (top-k results are unioned by spec name).
         */
        BatchedRequest: {
            /** Inferencesubrequests */
            inferenceSubRequests: components["schemas"]["InferenceSubRequest"][];
        };
        /**
         * BatchedResponse
         * @description Response of /batched and /batched_tdb: one entry per sub-request, in order.
         */
        BatchedResponse: {
            /** Inferencesubresponses */
            inferenceSubResponses: components["schemas"]["InferenceResponseAndResponseDict"][];
        };
        /**
         * BatchedTdbRequest
         * @description Body of /batched_tdb.
         */
        BatchedTdbRequest: {
            /** Subrequests */
            subRequests: components["schemas"]["TdbRequestSpec"][];
        };
        /**
         * ComponentTypeForAttention
         * @description Unit shown for attention layers in the TDB node table.
         * @enum {string}
         */
        ComponentTypeForAttention: "attention_head" | "autoencoder_latent";
        /**
         * ComponentTypeForMlp
         * @description Unit shown for MLP layers in the TDB node table.
         * @enum {string}
         */
        ComponentTypeForMlp: "neuron" | "autoencoder_latent" | "transcoder_latent";
        /**
         * DerivedAttentionScalarsRequest
         * @description Body of /derived_attention_scalars.
         */
        DerivedAttentionScalarsRequest: {
            derivedAttentionScalarsRequestSpec: components["schemas"]["DerivedAttentionScalarsRequestSpec"];
            inferenceRequestSpec: components["schemas"]["InferenceRequestSpec"];
        };
        /**
         * DerivedAttentionScalarsRequestSpec
         * @description Per-token-pair values of one attention derived scalar for one head.
         */
        DerivedAttentionScalarsRequestSpec: {
            /** Activationindex */
            activationIndex: number;
            dst: components["schemas"]["DerivedScalarType"];
            /** Layerindex */
            layerIndex?: number | null;
            normalizeActivationsUsingNeuronRecord?: components["schemas"]["NodeIdAndDatasets"] | null;
            /**
             * Spectype
             * @default derived_attention_scalars_request_spec
             * @constant
             */
            specType?: "derived_attention_scalars_request_spec";
        };
        /**
         * DerivedAttentionScalarsResponse
         * @description Response of /derived_attention_scalars.
         */
        DerivedAttentionScalarsResponse: {
            derivedAttentionScalarsResponseData: components["schemas"]["DerivedAttentionScalarsResponseData"];
            inferenceAndTokenData: components["schemas"]["InferenceAndTokenData"];
        };
        /**
         * DerivedAttentionScalarsResponseData
         * @description Attention scalars for each token of the prompt.
         */
        DerivedAttentionScalarsResponseData: {
            /**
             * Responsedatatype
             * @default derived_attention_scalars_response_data
             * @constant
             */
            responseDataType?: "derived_attention_scalars_response_data";
            /** Tokenandattentionscalarslist */
            tokenAndAttentionScalarsList: components["schemas"]["TokenAndAttentionScalars"][];
        };
        /**
         * DerivedScalarsRequest
         * @description Body of /derived_scalars.
         */
        DerivedScalarsRequest: {
            derivedScalarsRequestSpec: components["schemas"]["DerivedScalarsRequestSpec"];
            inferenceRequestSpec: components["schemas"]["InferenceRequestSpec"];
        };
        /**
         * DerivedScalarsRequestSpec
         * @description Per-token values of one derived scalar for one component (optionally normalized).
         */
        DerivedScalarsRequestSpec: {
            /** Activationindex */
            activationIndex: number;
            dst: components["schemas"]["DerivedScalarType"];
            /** Layerindex */
            layerIndex?: number | null;
            normalizeActivationsUsingNeuronRecord?: components["schemas"]["NodeIdAndDatasets"] | null;
            /** Numtoptokens */
            numTopTokens?: number | null;
            /** @default forward */
            passType?: components["schemas"]["PassType"];
            /**
             * Spectype
             * @default derived_scalars_request_spec
             * @constant
             */
            specType?: "derived_scalars_request_spec";
        };
        /**
         * DerivedScalarsResponse
         * @description Response of /derived_scalars.
         */
        DerivedScalarsResponse: {
            derivedScalarsResponseData: components["schemas"]["DerivedScalarsResponseData"];
            inferenceAndTokenData: components["schemas"]["InferenceAndTokenData"];
        };
        /**
         * DerivedScalarsResponseData
         * @description Per-token values (and optional normalized values / top tokens) for one component.
         */
        DerivedScalarsResponseData: {
            /** Activations */
            activations: number[];
            /** Nodeindices */
            nodeIndices: components["schemas"]["MirroredNodeIndex"][];
            /** Normalizedactivations */
            normalizedActivations?: number[] | null;
            /**
             * Responsedatatype
             * @default derived_scalars_response_data
             * @constant
             */
            responseDataType?: "derived_scalars_response_data";
            topTokens?: components["schemas"]["TopTokens"] | null;
        };
        /**
         * DerivedScalarType
         * @description Every scalar quantity the server computes (raw activations and derived ones; the
         *     definitions are the seed's, see debugger/scalars). The seed's edge attributions and
         *     activations and single-node writes are not here: they need a node the seed's server never
         *     sets from a request (DstConfig.node_index_for_attribution), so no request could ask for them.
         * @enum {string}
         */
        DerivedScalarType: "logits" | "resid_post_embedding" | "mlp_pre_act" | "mlp_post_act" | "resid_delta_mlp" | "resid_post_mlp" | "attn_query" | "attn_key" | "attn_value" | "attn_qk_logits" | "attn_qk_probs" | "attn_weighted_sum_of_values" | "resid_delta_attn" | "resid_post_attn" | "resid_final_layer_norm_scale" | "attn_input_layer_norm_scale" | "mlp_input_layer_norm_scale" | "online_autoencoder_latent" | "attn_write_norm" | "flattened_attn_post_softmax" | "attn_act_times_grad" | "resid_delta_mlp_from_mlp_post_act" | "mlp_write_norm" | "mlp_act_times_grad" | "autoencoder_latent" | "autoencoder_write_norm" | "mlp_write_to_final_residual_grad" | "attn_write_norm_per_sequence_token" | "attn_write_to_final_residual_grad_per_sequence_token" | "attn_act_times_grad_per_sequence_token" | "resid_post_embedding_norm" | "resid_post_mlp_norm" | "mlp_layer_write_norm" | "resid_post_attn_norm" | "attn_layer_write_norm" | "resid_post_embedding_proj_to_final_residual_grad" | "resid_post_mlp_proj_to_final_residual_grad" | "mlp_layer_write_to_final_residual_grad" | "resid_post_attn_proj_to_final_residual_grad" | "attn_layer_write_to_final_residual_grad" | "unflattened_attn_act_times_grad" | "unflattened_attn_write_norm" | "unflattened_attn_write_to_final_residual_grad" | "attn_write_to_final_residual_grad" | "online_autoencoder_act_times_grad" | "online_autoencoder_write_norm" | "online_autoencoder_write_to_final_residual_grad" | "online_mlp_autoencoder_error" | "online_residual_mlp_autoencoder_error" | "online_residual_attention_autoencoder_error" | "online_mlp_autoencoder_error_act_times_grad" | "online_mlp_autoencoder_error_write_norm" | "online_mlp_autoencoder_error_write_to_final_residual_grad" | "attn_write" | "attn_write_sum_heads" | "mlp_write" | "online_autoencoder_write" | "attn_weighted_value" | "previous_layer_resid_post_mlp" | "mlp_write_to_final_activation_residual_grad" | "unflattened_attn_write_to_final_activation_residual_grad" | "online_autoencoder_write_to_final_activation_residual_grad" | "resid_post_embedding_proj_to_final_activation_residual_grad" | "autoencoder_latent_grad_wrt_residual_input" | "autoencoder_latent_grad_wrt_mlp_post_act_input" | "attn_write_to_latent" | "attn_write_to_latent_summed_over_heads" | "flattened_attn_write_to_latent_summed_over_heads" | "flattened_attn_write_to_latent_summed_over_heads_batched" | "attn_write_to_latent_per_sequence_token" | "attn_write_to_latent_per_sequence_token_batched" | "token_attribution" | "vocab_token_write_to_input_direction" | "always_one" | "mlp_autoencoder_latent" | "mlp_autoencoder_write_norm" | "online_mlp_autoencoder_latent" | "online_mlp_autoencoder_write" | "online_mlp_autoencoder_write_norm" | "online_mlp_autoencoder_act_times_grad" | "online_mlp_autoencoder_write_to_final_residual_grad" | "online_mlp_autoencoder_write_to_final_activation_residual_grad" | "attention_autoencoder_latent" | "attention_autoencoder_write_norm" | "online_attention_autoencoder_latent" | "online_attention_autoencoder_write" | "online_attention_autoencoder_write_norm" | "online_attention_autoencoder_act_times_grad" | "online_attention_autoencoder_write_to_final_residual_grad" | "online_attention_autoencoder_write_to_final_activation_residual_grad" | "online_residual_autoencoder_latent" | "online_residual_autoencoder_write" | "online_residual_autoencoder_write_norm" | "online_residual_autoencoder_act_times_grad" | "online_residual_autoencoder_write_to_final_residual_grad" | "online_residual_autoencoder_write_to_final_activation_residual_grad" | "residual_autoencoder_latent" | "residual_autoencoder_write_norm" | "online_transcoder_latent" | "online_transcoder_write" | "online_transcoder_write_norm" | "online_transcoder_act_times_grad" | "online_transcoder_write_to_final_residual_grad" | "online_transcoder_write_to_final_activation_residual_grad" | "transcoder_latent" | "transcoder_write_norm";
        /**
         * Dimension
         * @description Names of tensor dimensions (token dimensions, model dimensions, autoencoder dimensions).
         * @enum {string}
         */
        Dimension: "sequence_tokens" | "attended_to_sequence_tokens" | "max_context_length" | "residual_stream_channels" | "vocab_size" | "attn_heads" | "query_and_key_channels" | "value_channels" | "mlp_acts" | "layers" | "singleton" | "autoencoder_latents" | "autoencoder_latents_by_token_pair";
        /**
         * ErrorDetail
         * @description One validation problem: where (`loc`, as FastAPI reports it), what and its kind.
         */
        ErrorDetail: {
            /** Loc */
            loc: (string | number)[];
            /** Msg */
            msg: string;
            /** Type */
            type: string;
        };
        /**
         * ErrorResponse
         * @description Every 4xx and 5xx answer. `detail` lists the first validation problems (422 only).
         */
        ErrorResponse: {
            /** Detail */
            detail?: components["schemas"]["ErrorDetail"][] | null;
            /** Message */
            message: string;
        };
        /**
         * ExistingExplanationsRequest
         * @description Body of /existing_explanations: exactly one of explanationDatasets / neuronDataset.
         */
        ExistingExplanationsRequest: {
            /** Activationindex */
            activationIndex: number;
            dst: components["schemas"]["DerivedScalarType"];
            /** Explanationdatasets */
            explanationDatasets: string[];
            /** Layerindex */
            layerIndex: number;
            /** Neurondataset */
            neuronDataset?: string | null;
        };
        /**
         * ExplanationResult
         * @description Response of /explain.
         */
        ExplanationResult: {
            /** Dataset */
            dataset: string;
            /** Explanations */
            explanations: string[];
        };
        /**
         * GroupId
         * @description Names of the groups in a multiple top-k request (keys of dstListByGroupId).
         * @enum {string}
         */
        GroupId: "act_times_grad" | "activation" | "direct_write_to_grad" | "direction_write" | "logits" | "mlp_layer_write" | "singleton" | "token_write" | "token_read" | "write_norm" | "token_pair_attribution";
        /**
         * InferenceAndTokenData
         * @description InferenceData plus the prompt's tokens (as ids and as strings).
         */
        InferenceAndTokenData: {
            /** Activationvalueforbackwardpass */
            activationValueForBackwardPass?: number | null;
            /** Inferencetime */
            inferenceTime: number;
            /** Log */
            log?: string | null;
            /** Loss */
            loss?: number | null;
            /** Memoryusedafter */
            memoryUsedAfter?: number | null;
            /** Memoryusedbefore */
            memoryUsedBefore?: number | null;
            /** Tokensasints */
            tokensAsInts: number[];
            /** Tokensasstrings */
            tokensAsStrings: string[];
        };
        /**
         * InferenceRequestSpec
         * @description How to run one forward (and optional backward) pass: prompt, ablations, loss or trace.
         */
        InferenceRequestSpec: {
            /** Ablationspecs */
            ablationSpecs?: components["schemas"]["AblationSpec"][] | null;
            activationIndexForWithinLayerGrad?: components["schemas"]["MirroredActivationIndex"] | null;
            lossFnConfig?: components["schemas"]["LossFnConfig"] | null;
            /**
             * Prompt
             * @description The prompt: at most the model's context window of tokens (--max-prompt-tokens).
             */
            prompt: string;
            traceConfig?: components["schemas"]["MirroredTraceConfig"] | null;
        };
        /**
         * InferenceResponse
         * @description Base of the single (non-batched) inference responses.
         */
        InferenceResponse: {
            inferenceAndTokenData: components["schemas"]["InferenceAndTokenData"];
        };
        /**
         * InferenceResponseAndResponseDict
         * @description Result of one sub-request: inference data plus one result per processing step name.
         */
        InferenceResponseAndResponseDict: {
            inferenceResponse: components["schemas"]["InferenceResponse"];
            /** Processingresponsedatabyname */
            processingResponseDataByName?: {
                [key: string]: components["schemas"]["MultipleTopKDerivedScalarsResponseData"] | components["schemas"]["DerivedScalarsResponseData"] | components["schemas"]["DerivedAttentionScalarsResponseData"] | components["schemas"]["ScoredTokensResponseData"] | components["schemas"]["TokenPairAttributionResponseData"];
            };
        };
        /**
         * InferenceSubRequest
         * @description One inference pass plus named processing steps applied to its activations.
         */
        InferenceSubRequest: {
            inferenceRequestSpec: components["schemas"]["InferenceRequestSpec"];
            /** Processingrequestspecbyname */
            processingRequestSpecByName?: {
                [key: string]: components["schemas"]["MultipleTopKDerivedScalarsRequestSpec"] | components["schemas"]["DerivedScalarsRequestSpec"] | components["schemas"]["DerivedAttentionScalarsRequestSpec"] | components["schemas"]["ScoredTokensRequestSpec"] | components["schemas"]["TokenPairAttributionRequestSpec"];
            };
        };
        /**
         * LossFnConfig
         * @description Loss function (and its target/distractor tokens) for the backward pass.
         */
        LossFnConfig: {
            /** Distractortokens */
            distractorTokens?: string[] | null;
            name: components["schemas"]["LossFnName"];
            /** Targettokens */
            targetTokens?: string[] | null;
        };
        /**
         * LossFnName
         * @description Loss functions the backward pass can start from.
         * @enum {string}
         */
        LossFnName: "logit_diff" | "logit_minus_mean" | "probs" | "zero";
        /**
         * MirroredActivationIndex
         * @description Identifies (a slice of) an activation tensor; "All" in tensorIndices means a full slice.
         */
        MirroredActivationIndex: {
            activationLocationType: components["schemas"]["ActivationLocationType"];
            /** Layerindex */
            layerIndex?: number | null;
            passType: components["schemas"]["PassType"];
            /** Tensorindices */
            tensorIndices: (number | "All")[];
        };
        /**
         * MirroredNodeIndex
         * @description Identifies one node (e.g. neuron at token t); None entries in tensorIndices mean 'all'.
         */
        MirroredNodeIndex: {
            /** Layerindex */
            layerIndex?: number | null;
            nodeType: components["schemas"]["NodeType"];
            passType: components["schemas"]["PassType"];
            /** Tensorindices */
            tensorIndices: (number | null)[];
        };
        /**
         * MirroredTraceConfig
         * @description Node whose activation the backward pass starts from (optionally via a downstream node).
         */
        MirroredTraceConfig: {
            attentionTraceType?: components["schemas"]["AttentionTraceType"] | null;
            /** Detachlayernormscale */
            detachLayerNormScale: boolean;
            downstreamTraceConfig?: components["schemas"]["MirroredTraceConfig"] | null;
            nodeIndex: components["schemas"]["MirroredNodeIndex"];
            preOrPostAct: components["schemas"]["PreOrPostAct"];
        };
        /**
         * ModelInfoResponse
         * @description Which subject model (and autoencoders) the server runs.
         */
        ModelInfoResponse: {
            /** Attentionautoencodername */
            attentionAutoencoderName?: string | null;
            /** Ctxwindow */
            ctxWindow?: number | null;
            /** Dhead */
            dHead?: number | null;
            /** Dmlp */
            dMlp?: number | null;
            /** Dmodel */
            dModel?: number | null;
            /** Family */
            family?: string | null;
            /** Hasattentionautoencoder */
            hasAttentionAutoencoder: boolean;
            /** Hasmlpautoencoder */
            hasMlpAutoencoder: boolean;
            /** Mlpautoencodername */
            mlpAutoencoderName?: string | null;
            /** Modelname */
            modelName?: string | null;
            /** Nattentionautoencoderlatents */
            nAttentionAutoencoderLatents?: number | null;
            /** Nheads */
            nHeads?: number | null;
            /** Nkvheads */
            nKvHeads?: number | null;
            /** Nlayers */
            nLayers: number;
            /** Nmlpautoencoderlatents */
            nMlpAutoencoderLatents?: number | null;
            /** Nresidualautoencoderlatents */
            nResidualAutoencoderLatents?: number | null;
            /** Ntranscoderlatents */
            nTranscoderLatents?: number | null;
            /** Nvocab */
            nVocab?: number | null;
            /** Residualautoencoderlayers */
            residualAutoencoderLayers?: number[] | null;
            /** Transcoderlayers */
            transcoderLayers?: number[] | null;
        };
        /**
         * MultipleTopKDerivedScalarsRequest
         * @description Body of /multiple_top_k_derived_scalars.
         */
        MultipleTopKDerivedScalarsRequest: {
            inferenceRequestSpec: components["schemas"]["InferenceRequestSpec"];
            multipleTopKDerivedScalarsRequestSpec: components["schemas"]["MultipleTopKDerivedScalarsRequestSpec"];
        };
        /**
         * MultipleTopKDerivedScalarsRequestSpec
         * @description Top/bottom-k nodes ranked jointly over several groups of derived scalars.
         */
        MultipleTopKDerivedScalarsRequestSpec: {
            /** Dimensionstokeepforintermediatesum */
            dimensionsToKeepForIntermediateSum?: components["schemas"]["Dimension"][];
            /** Dstlistbygroupid */
            dstListByGroupId: {
                [key: string]: components["schemas"]["DerivedScalarType"][];
            };
            /** @default forward */
            passType?: components["schemas"]["PassType"];
            /**
             * Spectype
             * @default multiple_top_k_derived_scalars_request_spec
             * @constant
             */
            specType?: "multiple_top_k_derived_scalars_request_spec";
            /** Tokenindex */
            tokenIndex?: number | null;
            /** Topandbottomk */
            topAndBottomK?: number | null;
        };
        /**
         * MultipleTopKDerivedScalarsResponse
         * @description Response of /multiple_top_k_derived_scalars.
         */
        MultipleTopKDerivedScalarsResponse: {
            inferenceAndTokenData: components["schemas"]["InferenceAndTokenData"];
            multipleTopKDerivedScalarsResponseData: components["schemas"]["MultipleTopKDerivedScalarsResponseData"];
        };
        /**
         * MultipleTopKDerivedScalarsResponseData
         * @description Top-k nodes with one activation list per group, plus per-DST sums over all nodes.
         */
        MultipleTopKDerivedScalarsResponseData: {
            /** Activationsbygroupid */
            activationsByGroupId: {
                [key: string]: number[];
            };
            /** Intermediatesumactivationsbydstbygroupid */
            intermediateSumActivationsByDstByGroupId: {
                [key: string]: {
                    [key: string]: components["schemas"]["Tensor0D"] | components["schemas"]["Tensor1D"] | components["schemas"]["Tensor2D"] | components["schemas"]["Tensor3D"];
                };
            };
            /** Nodeindices */
            nodeIndices: components["schemas"]["MirroredNodeIndex"][];
            /**
             * Responsedatatype
             * @default multiple_top_k_derived_scalars_response_data
             * @constant
             */
            responseDataType?: "multiple_top_k_derived_scalars_response_data";
            /** Vocabtokenstringsforindices */
            vocabTokenStringsForIndices?: (string | null)[] | null;
        };
        /**
         * NeuronDatasetMetadata
         * @description One entry of /neuron_datasets_metadata.
         */
        NeuronDatasetMetadata: {
            /** Derivedscalartype */
            derivedScalarType: string;
            /** Neurondatasetpath */
            neuronDatasetPath: string;
            /** Shortname */
            shortName: string;
            /** Uservisiblename */
            userVisibleName: string;
        };
        /**
         * NeuronRecordResponse
         * @description Response of /neuron_record: top-activating and random sequences for a node.
         */
        NeuronRecordResponse: {
            /** Dataset */
            dataset: string;
            /** Maxactivation */
            maxActivation: number;
            /** Randomsample */
            randomSample: components["schemas"]["TokenAndScalar"][][];
            /** Topactivations */
            topActivations: components["schemas"]["TokenAndScalar"][][];
        };
        /**
         * NodeAblation
         * @description Client-side ablation of one node; the server converts it to an AblationSpec.
         */
        NodeAblation: {
            nodeIndex: components["schemas"]["MirroredNodeIndex"];
            /** Value */
            value: number;
        };
        /**
         * NodeIdAndDatasets
         * @description A node (dst, layer, index) plus the neuron datasets (paths or short names) to look in.
         */
        NodeIdAndDatasets: {
            /** Activationindex */
            activationIndex: number;
            /** Datasets */
            datasets: string[];
            dst: components["schemas"]["DerivedScalarType"];
            /** Layerindex */
            layerIndex: number;
        };
        /**
         * NodeToTrace
         * @description Client-side description of a node to trace gradients from (TDB 'trace upstream').
         */
        NodeToTrace: {
            attentionTraceType?: components["schemas"]["AttentionTraceType"] | null;
            downstreamTraceConfig?: components["schemas"]["MirroredTraceConfig"] | null;
            nodeIndex: components["schemas"]["MirroredNodeIndex"];
        };
        /**
         * NodeType
         * @description Kind of model component that carries one scalar per token (or token pair).
         * @enum {string}
         */
        NodeType: "attention_head" | "qk_channel" | "v_channel" | "mlp_neuron" | "autoencoder_latent" | "mlp_autoencoder_latent" | "attention_autoencoder_latent" | "autoencoder_latent_by_token_pair" | "residual_autoencoder_latent" | "transcoder_latent" | "layer" | "residual_stream_channel" | "vocab_token";
        /**
         * PassType
         * @description Whether a quantity comes from the forward or the backward pass.
         * @enum {string}
         */
        PassType: "forward" | "backward";
        /**
         * PreOrPostAct
         * @description Trace from before or after the nonlinearity.
         * @enum {string}
         */
        PreOrPostAct: "pre" | "post";
        /**
         * ScoredTokensRequestSpec
         * @description Top/bottom tokens for every node selected by another (top-k) spec of the request.
         */
        ScoredTokensRequestSpec: {
            /** Dependsonspecname */
            dependsOnSpecName: string;
            /** Numtokens */
            numTokens: number;
            /**
             * Spectype
             * @default scored_tokens_request_spec
             * @constant
             */
            specType?: "scored_tokens_request_spec";
            tokenScoringType: components["schemas"]["TokenScoringType"];
        };
        /**
         * ScoredTokensResponseData
         * @description Top tokens per node; None where the scoring type does not apply to the node.
         */
        ScoredTokensResponseData: {
            /** Nodeindices */
            nodeIndices: components["schemas"]["MirroredNodeIndex"][];
            /**
             * Responsedatatype
             * @default scored_tokens_response_data
             * @constant
             */
            responseDataType?: "scored_tokens_response_data";
            /** Toptokenslist */
            topTokensList: (components["schemas"]["TopTokens"] | null)[];
        };
        /**
         * ScoreRequest
         * @description Body of /score: a node, its datasets and the explanation to score.
         */
        ScoreRequest: {
            /** Activationindex */
            activationIndex: number;
            /** Datasets */
            datasets: string[];
            dst: components["schemas"]["DerivedScalarType"];
            /** Explanation */
            explanation: string;
            /** Layerindex */
            layerIndex: number;
            /** Maxsequences */
            maxSequences?: number | null;
        };
        /**
         * ScoreResult
         * @description Response of /score.
         */
        ScoreResult: {
            /** Datasetpath */
            datasetPath: string;
            /** Score */
            score: number;
        };
        /**
         * TdbRequestSpec
         * @description Everything the TDB UI lets the user choose for one prompt.
         */
        TdbRequestSpec: {
            componentTypeForAttention: components["schemas"]["ComponentTypeForAttention"];
            componentTypeForMlp: components["schemas"]["ComponentTypeForMlp"];
            /** Distractortokens */
            distractorTokens: string[];
            downstreamNodeToTrace?: components["schemas"]["NodeToTrace"] | null;
            /** Hideearlylayerswhenablating */
            hideEarlyLayersWhenAblating: boolean;
            /**
             * Includeresiduallatents
             * @default false
             */
            includeResidualLatents?: boolean;
            /** Nodeablations */
            nodeAblations?: components["schemas"]["NodeAblation"][] | null;
            /**
             * Prompt
             * @description The prompt: at most the model's context window of tokens (--max-prompt-tokens).
             */
            prompt: string;
            /**
             * Spectype
             * @default tdb_request_spec
             * @constant
             */
            specType?: "tdb_request_spec";
            /** Targettokens */
            targetTokens: string[];
            /** Topandbottomkfornodetable */
            topAndBottomKForNodeTable: number;
            upstreamNodeToTrace?: components["schemas"]["NodeToTrace"] | null;
        };
        /**
         * Tensor0D
         * @description A scalar sent as JSON.
         */
        Tensor0D: {
            /**
             * Tensortype
             * @default tensor_0d
             * @constant
             */
            tensorType?: "tensor_0d";
            /** Value */
            value: number;
        };
        /**
         * Tensor1D
         * @description A vector sent as a JSON list.
         */
        Tensor1D: {
            /**
             * Tensortype
             * @default tensor_1d
             * @constant
             */
            tensorType?: "tensor_1d";
            /** Value */
            value: number[];
        };
        /**
         * Tensor2D
         * @description A matrix sent as nested JSON lists.
         */
        Tensor2D: {
            /**
             * Tensortype
             * @default tensor_2d
             * @constant
             */
            tensorType?: "tensor_2d";
            /** Value */
            value: number[][];
        };
        /**
         * Tensor3D
         * @description A rank-3 tensor sent as nested JSON lists.
         */
        Tensor3D: {
            /**
             * Tensortype
             * @default tensor_3d
             * @constant
             */
            tensorType?: "tensor_3d";
            /** Value */
            value: number[][][];
        };
        /**
         * TokenAndAttentionScalars
         * @description A token with per-attended-to-token scalars plus normalized and summarized variants.
         */
        TokenAndAttentionScalars: {
            /** Maxscalarin */
            maxScalarIn: number;
            /** Maxscalarout */
            maxScalarOut: number;
            /** Normalizedmaxscalarin */
            normalizedMaxScalarIn: number;
            /** Normalizedmaxscalarout */
            normalizedMaxScalarOut: number;
            /** Normalizedscalars */
            normalizedScalars: number[];
            /** Normalizedtotalscalarin */
            normalizedTotalScalarIn: number;
            /** Normalizedtotalscalarout */
            normalizedTotalScalarOut: number;
            /** Scalars */
            scalars: number[];
            /** Token */
            token: string;
            /** Totalscalarin */
            totalScalarIn: number;
            /** Totalscalarout */
            totalScalarOut: number;
        };
        /**
         * TokenAndScalar
         * @description A token string with a scalar and the scalar normalized to [0, 1].
         */
        TokenAndScalar: {
            /** Normalizedscalar */
            normalizedScalar: number;
            /** Scalar */
            scalar: number;
            /** Token */
            token: string;
        };
        /**
         * TokenPairAttributionRequestSpec
         * @description Most-attended-to tokens for every node selected by another (top-k) spec.
         */
        TokenPairAttributionRequestSpec: {
            /** Dependsonspecname */
            dependsOnSpecName: string;
            /** Numtokensattendedto */
            numTokensAttendedTo: number;
            /**
             * Spectype
             * @default token_pair_attribution_request_spec
             * @constant
             */
            specType?: "token_pair_attribution_request_spec";
        };
        /**
         * TokenPairAttributionResponseData
         * @description Attended-to tokens per node; None where attribution does not apply to the node.
         */
        TokenPairAttributionResponseData: {
            /** Nodeindices */
            nodeIndices: components["schemas"]["MirroredNodeIndex"][];
            /**
             * Responsedatatype
             * @default token_pair_attribution_response_data
             * @constant
             */
            responseDataType?: "token_pair_attribution_response_data";
            /** Toptokensattendedtolist */
            topTokensAttendedToList: (components["schemas"]["TopTokensAttendedTo"] | null)[];
        };
        /**
         * TokenScoringType
         * @description How vocab tokens are scored against a node.
         * @enum {string}
         */
        TokenScoringType: "upvoted_output_tokens" | "input_tokens_that_upvote_mlp" | "input_tokens_that_upvote_attn_q" | "input_tokens_that_upvote_attn_k";
        /**
         * TopTokens
         * @description Highest- and lowest-scoring vocab tokens for one node, sorted by |scalar|.
         */
        TopTokens: {
            /** Bottom */
            bottom: components["schemas"]["TokenAndScalar"][];
            /** Top */
            top: components["schemas"]["TokenAndScalar"][];
        };
        /**
         * TopTokensAttendedTo
         * @description Sequence positions most attributed for one attention node, with their attributions.
         */
        TopTokensAttendedTo: {
            /** Attributions */
            attributions: number[];
            /** Tokenindices */
            tokenIndices: number[];
        };
    };
    responses: never;
    parameters: never;
    requestBodies: never;
    headers: never;
    pathItems: never;
}
export type $defs = Record<string, never>;
export interface operations {
    "hello_world-read_root": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": {
                        [key: string]: string;
                    };
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "read-attention_head_record": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["NodeIdAndDatasets"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AttentionHeadRecordResponse"];
                };
            };
            /** @description The request is malformed JSON, or asks for something this server cannot do (the message names the field) */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description No registered dataset or record has what the request names */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "graph-attribution_graph": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["AttributionGraphRequest"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AttributionGraphResponse"];
                };
            };
            /** @description The request is malformed JSON, or asks for something this server cannot do (the message names the field) */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "inference-batched": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["BatchedRequest"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BatchedResponse"];
                };
            };
            /** @description The request is malformed JSON, or asks for something this server cannot do (the message names the field) */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "inference-batched_tdb": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["BatchedTdbRequest"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BatchedResponse"];
                };
            };
            /** @description The request is malformed JSON, or asks for something this server cannot do (the message names the field) */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "inference-derived_attention_scalars": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["DerivedAttentionScalarsRequest"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["DerivedAttentionScalarsResponse"];
                };
            };
            /** @description The request is malformed JSON, or asks for something this server cannot do (the message names the field) */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "inference-derived_scalars": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["DerivedScalarsRequest"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["DerivedScalarsResponse"];
                };
            };
            /** @description The request is malformed JSON, or asks for something this server cannot do (the message names the field) */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "read-existing_explanations": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["ExistingExplanationsRequest"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AttributedScoredExplanation"][];
                };
            };
            /** @description The request is malformed JSON, or asks for something this server cannot do (the message names the field) */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description No registered dataset or record has what the request names */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "explainer-explain": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["NodeIdAndDatasets"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ExplanationResult"];
                };
            };
            /** @description The request is malformed JSON, or asks for something this server cannot do (the message names the field) */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description No registered dataset or record has what the request names */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "hello_world-force_client_code_generation": {
        parameters: {
            query: {
                group_id: components["schemas"]["GroupId"];
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": unknown;
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "inference-model_info": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ModelInfoResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "inference-multiple_top_k_derived_scalars": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["MultipleTopKDerivedScalarsRequest"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["MultipleTopKDerivedScalarsResponse"];
                };
            };
            /** @description The request is malformed JSON, or asks for something this server cannot do (the message names the field) */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "read-neuron_datasets_metadata": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["NeuronDatasetMetadata"][];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "read-neuron_record": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["NodeIdAndDatasets"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["NeuronRecordResponse"];
                };
            };
            /** @description The request is malformed JSON, or asks for something this server cannot do (the message names the field) */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description No registered dataset or record has what the request names */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
    "explainer-score": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["ScoreRequest"];
            };
        };
        responses: {
            /** @description Successful Response */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ScoreResult"];
                };
            };
            /** @description The request is malformed JSON, or asks for something this server cannot do (the message names the field) */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description No registered dataset or record has what the request names */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request body is larger than the server accepts (--max-request-bytes) */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The request does not match the schema (the message names the field) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
            /** @description The server was started without what this route needs (a model, the network for published datasets, an LLM endpoint) */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorResponse"];
                };
            };
        };
    };
}
