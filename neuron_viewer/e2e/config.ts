// Settings of the end-to-end run, from the environment.
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const VIEWER_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO_DIR = resolve(VIEWER_DIR, "..");
export const ARTIFACTS_DIR = resolve(REPO_DIR, process.env.TDB_E2E_ARTIFACTS ?? "test-artifacts");

/**
 * The model the server runs:
 *   demo (default): the bundled demo model, as the README's main command serves it (with its
 *     autoencoders and neuron records); a trained model, so the assertions are strict;
 *   random: a small random GPT-2 with random autoencoders, made by e2e/make_test_model.py;
 *   llama: the same for a random Llama-style model (grouped-query attention, SwiGLU, RMSNorm,
 *     rotary positions, its own tokenizer.json with <bos>), in the Hugging Face layout;
 *   a folder: any model the server loads (add autoencoders with TDB_E2E_SERVER_ARGS).
 *   TDB_E2E_MODEL=llama bash scripts/viewer_test.sh
 */
export const MODEL = process.env.TDB_E2E_MODEL || "demo";
/** A random model made for the run by e2e/make_test_model.py, of this family. */
export const RANDOM_FAMILY = MODEL === "random" ? "gpt2" : MODEL === "llama" ? "llama" : null;
export const RANDOM_MODEL = RANDOM_FAMILY !== null;
/** Trained model: ablating the top head must lower the logit difference. */
export const STRICT = !RANDOM_MODEL && process.env.TDB_E2E_STRICT !== "0";
export const MODEL_NAME = process.env.TDB_E2E_MODEL_NAME ?? (RANDOM_MODEL ? `e2e-random-${RANDOM_FAMILY}` : MODEL === "demo" ? "demo" : "e2e-model");
/** The random model's attention heads are weak: list more nodes so some make the table. */
export const TOP_K = Number(process.env.TDB_E2E_TOP_K ?? (STRICT ? 10 : 30));
/** The demo and random models come with autoencoders, so the latent views are tested too. */
export const AUTOENCODERS = (MODEL === "demo" || RANDOM_MODEL) && process.env.TDB_E2E_AUTOENCODERS !== "0";
/** Node counts per layer the welcome page must show (heads, MLP neurons, MLP latents); for a
 * random model, globalSetup provides them from the model it made. */
export const EXPECTED_COUNTS = MODEL === "demo" ? { heads: 6, neurons: 768, latents: 768 } : null;
/** Tokens of the prompt the node page test types, as the demo's and GPT-2's tokenizers cut it. */
export const TYPED_PROMPT_TOKENS = 6;
/** More server flags, e.g. "--mlp-autoencoder FOLDER" for a model folder. */
export const EXTRA_SERVER_ARGS = (process.env.TDB_E2E_SERVER_ARGS ?? "").split(" ").filter(Boolean);
export const PYTHON = process.env.PYTHON ?? resolve(REPO_DIR, ".venv/bin/python");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** The node page must show dataset examples: the demo model's records are bundled. */
export const EXPECT_RECORDS = (process.env.TDB_E2E_EXPECT_RECORDS ?? (MODEL === "demo" ? "1" : "0")) === "1";

export const IOI_PROMPT = "<|endoftext|>When Mary and John went to the store, John gave a drink to";
