"""Automated explanations: an LLM explains what makes a node fire, and the explanation is scored
by how well it predicts the node's activations (the method of "Language models can explain
neurons in language models").

- `llm`: async client for OpenAI-compatible endpoints (retries, concurrency limit, disk cache);
- `prompts`: prompt formats and our few-shot examples;
- `explainer`: explanations of neurons / latents (per token) and attention heads (per token pair);
- `simulator`: predicted activations from an explanation (logprob-free and logprob-based);
- `scoring`: correlation scoring (neurons) and ROC AUC pair scoring (heads) on held-out records;
- `store`: the explanation files beside the dataset;
- `batch`: `python -m neuron_explainer.explanations.batch`, many nodes at once, resumable.
"""
