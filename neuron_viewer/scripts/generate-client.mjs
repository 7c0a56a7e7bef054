// Regenerates the typed API client from the activation server's OpenAPI document.
//
//   npm run generate-client   writes src/client/openapi.json and src/client/schema.ts
//   npm run check-client      fails (exit 1) when the committed files differ from a fresh run
//
// The document comes from scripts/dump_openapi.py (no server needs to run). Python is $PYTHON,
// else the repository's .venv, else python3.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";

const viewer = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repo = resolve(viewer, "..");
const outDir = join(viewer, "src", "client");
const check = process.argv.includes("--check");

function python() {
  if (process.env.PYTHON) return process.env.PYTHON;
  const venv = join(repo, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

function dumpOpenapi() {
  const tmp = mkdtempSync(join(tmpdir(), "openapi-"));
  try {
    const file = join(tmp, "openapi.json");
    execFileSync(python(), [join(viewer, "scripts", "dump_openapi.py"), file], {
      cwd: repo,
      stdio: ["ignore", "inherit", "inherit"],
    });
    return readFileSync(file, "utf8");
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const HEADER = `/**
 * Generated from the activation server's OpenAPI document by \`npm run generate-client\`
 * (openapi-typescript). Do not edit: change neuron_explainer/activation_server/schemas.py or
 * main.py and regenerate; \`npm run check-client\` fails while this file is stale.
 */

`;

const openapiText = dumpOpenapi();
const ast = await openapiTS(JSON.parse(openapiText), { alphabetize: true, defaultNonNullable: false });
const files = {
  "openapi.json": openapiText,
  "schema.ts": HEADER + astToString(ast),
};

if (check) {
  const stale = Object.entries(files).filter(([name, text]) => {
    const path = join(outDir, name);
    return !existsSync(path) || readFileSync(path, "utf8") !== text;
  });
  if (stale.length > 0) {
    console.error(
      `check-client: ${stale.map(([n]) => `src/client/${n}`).join(", ")} ` +
        "differ from the server's current schema: run `npm run generate-client` and commit.",
    );
    process.exit(1);
  }
  console.log("check-client: the generated client matches the server's schema");
} else {
  for (const [name, text] of Object.entries(files)) writeFileSync(join(outDir, name), text);
  console.log(`generate-client: wrote ${Object.keys(files).map((n) => `src/client/${n}`).join(", ")}`);
}
