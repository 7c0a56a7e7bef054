// Starts the activation server (`python -m neuron_explainer.activation_server`, serving the built
// viewer) on a free port for the e2e tests, and stops it afterwards. Its log goes to test-artifacts/e2e-server.log.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { datasetName } from "../src/state/nodes";
import {
  ARTIFACTS_DIR,
  AUTOENCODERS,
  EXPECTED_COUNTS,
  EXTRA_SERVER_ARGS,
  MODEL,
  MODEL_NAME,
  PYTHON,
  RANDOM_FAMILY,
  REPO_DIR,
  TYPED_PROMPT_TOKENS,
  VIEWER_DIR,
} from "./config";

declare module "vitest" {
  export interface ProvidedContext {
    baseUrl: string;
    /** The dataset name in the viewer's URLs: `<model>` or `<model>_<mlp ae>_<attn ae>`. */
    modelName: string;
    /** Node counts per layer the welcome page must show, when known. */
    expectedCounts: { heads: number; neurons: number; latents: number } | null;
    /** Tokens of the prompt the node page test types, BOS included. */
    typedPromptTokens: number;
    /** What /model_info says is attached: transcoders and residual-stream SAEs (the demo has both). */
    hasTranscoders: boolean;
    hasResidualSaes: boolean;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

async function waitUntilUp(baseUrl: string, server: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) throw new Error(`the server exited with ${server.exitCode}: see ${ARTIFACTS_DIR}/e2e-server.log`);
    try {
      const r = await fetch(`${baseUrl}/model_info`, { method: "POST" });
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`the server did not answer /model_info within ${timeoutMs / 1000} s`);
}

function stop(server: ChildProcess): Promise<void> {
  return new Promise((resolveStop) => {
    if (server.exitCode !== null || server.signalCode !== null) return resolveStop();
    const force = setTimeout(() => server.kill("SIGKILL"), 5000);
    server.once("exit", () => {
      clearTimeout(force);
      resolveStop();
    });
    server.kill("SIGTERM");
  });
}

export default async function setup(project: TestProject) {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const dist = join(VIEWER_DIR, "dist");
  if (!existsSync(join(dist, "index.html"))) throw new Error("no viewer build: run `npm run build` first");
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const log = createWriteStream(join(ARTIFACTS_DIR, "e2e-server.log"));
  // the server exactly as the README's main command starts it, on a free port, on the CPU
  const args = ["-m", "neuron_explainer.activation_server", "--port", String(port), "--device", "cpu", "--viewer-dist", dist];
  let facts: { heads: number; neurons: number; latents: number; typedPromptTokens: number } | null = null;
  if (RANDOM_FAMILY) {
    const modelPath = join(ARTIFACTS_DIR, `e2e-model-${RANDOM_FAMILY}`);
    const made = execFileSync(PYTHON, [join(VIEWER_DIR, "e2e/make_test_model.py"), modelPath, "--family", RANDOM_FAMILY], {
      cwd: REPO_DIR,
      stdio: ["ignore", "pipe", "inherit"],
    });
    facts = JSON.parse(made.toString().trim().split("\n").pop() ?? "{}");
    const aes = join(modelPath, "autoencoders");
    args.push("--model-path", modelPath, "--model-name", MODEL_NAME);
    if (AUTOENCODERS) args.push("--mlp-autoencoder", join(aes, "ae-mlp"), "--attention-autoencoder", join(aes, "ae-attn"));
  } else if (MODEL !== "demo") {
    args.push("--model-path", MODEL, "--model-name", MODEL_NAME);
  }
  args.push(...EXTRA_SERVER_ARGS);
  const server = spawn(PYTHON, args, { cwd: REPO_DIR, stdio: ["ignore", "pipe", "pipe"] });
  server.stdout?.pipe(log);
  server.stderr?.pipe(log);
  try {
    await waitUntilUp(baseUrl, server, 150_000);
  } catch (error) {
    await stop(server);
    throw error;
  }
  project.provide("baseUrl", baseUrl);
  project.provide("expectedCounts", facts ? { heads: facts.heads, neurons: facts.neurons, latents: facts.latents } : EXPECTED_COUNTS);
  project.provide("typedPromptTokens", facts ? facts.typedPromptTokens : TYPED_PROMPT_TOKENS);
  const info = (await (await fetch(`${baseUrl}/model_info`, { method: "POST" })).json()) as Parameters<typeof datasetName>[0] & {
    transcoderLayers?: number[] | null;
    residualAutoencoderLayers?: number[] | null;
  };
  project.provide("modelName", datasetName(info));
  project.provide("hasTranscoders", (info.transcoderLayers?.length ?? 0) > 0);
  project.provide("hasResidualSaes", (info.residualAutoencoderLayers?.length ?? 0) > 0);
  return async () => {
    await stop(server);
    log.end();
  };
}
