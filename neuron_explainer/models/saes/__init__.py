"""The community's sparse autoencoders and transcoders: one module and a loader per layout.

- `SparseCoder` (sparse_coder.py): standard / topk / jumprelu / gated SAEs and (skip,
  jumprelu) transcoders, computing exactly what SAELens computes at inference.
- `load_sae(source)` / `load_transcoder_set(source)` (loading.py): a local folder,
  "RELEASE:SAE_ID" of SAELens' release table, or "hf://owner/repo/path"; layouts of SAELens
  (saelens_format.py), Gemma Scope (gemma_scope.py), Llama Scope (llama_scope.py) and
  circuit-tracer (circuit_tracer.py).
- `hook_point_for(tl_name)` (hook_names.py): TransformerLens hook names as our hook points.
"""

from neuron_explainer.models.saes.circuit_tracer import (
    TranscoderSet,
    load_circuit_tracer_layer,
    load_circuit_tracer_set,
)
from neuron_explainer.models.saes.gemma_scope import load_gemma_scope
from neuron_explainer.models.saes.hook_names import HookConventions, hook_point_for
from neuron_explainer.models.saes.llama_scope import load_llama_scope
from neuron_explainer.models.saes.loading import detect_format, load_sae, load_transcoder_set
from neuron_explainer.models.saes.releases import Release, find_release, release_table
from neuron_explainer.models.saes.saelens_format import load_saelens_folder
from neuron_explainer.models.saes.sparse_coder import SparseCoder, SparseCoderInfo

__all__ = [
    "HookConventions",
    "Release",
    "SparseCoder",
    "SparseCoderInfo",
    "TranscoderSet",
    "detect_format",
    "find_release",
    "hook_point_for",
    "load_circuit_tracer_layer",
    "load_circuit_tracer_set",
    "load_gemma_scope",
    "load_llama_scope",
    "load_sae",
    "load_saelens_folder",
    "load_transcoder_set",
    "release_table",
]
