// Settings of the end-to-end run, from the environment.
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const VIEWER_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO_DIR = resolve(VIEWER_DIR, "..");
export const ARTIFACTS_DIR = resolve(REPO_DIR, process.env.TDB_E2E_ARTIFACTS ?? "test-artifacts");

/**
 * The model the server runs. Unset: a small random model made by e2e/make_test_model.py.
 * Set it to the demo model's folder to test on that (and get the strict assertions):
 *   TDB_E2E_MODEL=/path/to/demo-model bash scripts/viewer_test.sh
 */
export const MODEL_PATH = process.env.TDB_E2E_MODEL || null;
/** Trained model: ablating the top head must lower the logit difference. */
export const STRICT = MODEL_PATH !== null && process.env.TDB_E2E_STRICT !== "0";
export const MODEL_NAME = process.env.TDB_E2E_MODEL_NAME ?? (MODEL_PATH ? "demo" : "e2e-random");
/** The random model's attention heads are weak: list more nodes so some make the table. */
export const TOP_K = Number(process.env.TDB_E2E_TOP_K ?? (STRICT ? 10 : 30));
/** The random model comes with random autoencoders, so the latent views are tested too. */
export const AUTOENCODERS = MODEL_PATH === null && process.env.TDB_E2E_AUTOENCODERS !== "0";
/** More server flags, e.g. "--mlp-autoencoder FOLDER" for the demo model. */
export const EXTRA_SERVER_ARGS = (process.env.TDB_E2E_SERVER_ARGS ?? "").split(" ").filter(Boolean);
export const PYTHON = process.env.PYTHON ?? resolve(REPO_DIR, ".venv/bin/python");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** Dataset records are being built; once served, the node page must show examples. */
export const EXPECT_RECORDS = process.env.TDB_E2E_EXPECT_RECORDS === "1";

export const IOI_PROMPT = "<|endoftext|>When Mary and John went to the store, John gave a drink to";
