// The node kinds of community SAEs and transcoders: the debugger lists transcoder latents for the
// MLPs and residual-stream SAE latents (ablating and tracing them), and their node pages show
// the demo's records for them. Skipped on a server without them (the random models).
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { EXPECT_RECORDS, IOI_PROMPT } from "./config";
import { openPage, numberAt, queryOf, rowKeys, screenshot, settled } from "./helpers";

const baseUrl = inject("baseUrl");
const model = inject("modelName");
const hasTranscoders = inject("hasTranscoders");
const hasResidualSaes = inject("hasResidualSaes");

let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

beforeAll(async () => {
  ({ browser, page } = await openPage(pageErrors));
});

afterAll(async () => {
  await browser?.close();
});

/** The node page shows dataset examples (the demo's records have these kinds) and a heatmap of the prompt. */
async function expectNodePage(title: string) {
  await page.getByTestId("node-page").waitFor();
  expect(await page.getByTestId("node-title").textContent()).toContain(title);
  await page.locator('[data-testid="prompt-heatmap"] .token').first().waitFor();
  const records = page.getByTestId("records");
  await records.locator('[data-testid="record-sequence"], .error-note').first().waitFor();
  if (EXPECT_RECORDS) expect(await records.getByTestId("record-sequence").count()).toBeGreaterThan(0);
  await page.locator('[data-testid="output-tokens"] .chip').first().waitFor();
  await page.getByTestId("explanation").locator(".error-note, .explanations, p.muted").first().waitFor();
}

describe.runIf(hasTranscoders && hasResidualSaes)("transcoder and residual-stream SAE latents", () => {
  it("lists transcoder latents for the MLPs and residual latents in the node table", async () => {
    await page.goto(`${baseUrl}/${model}/tdb`);
    await settled(page);
    await page.getByTestId("mlp-transcoders").click();
    await page.waitForURL((url) => url.searchParams.get("mlp") === "transcoder_latent");
    await page.getByTestId("residual-latents").check();
    await page.waitForURL((url) => url.searchParams.get("resid") === "1");
    await settled(page);
    const types = new Set((await rowKeys(page, 1000)).map((k) => k.split(":")[0]));
    expect(types.has("transcoder_latent")).toBe(true);
    expect(types.has("residual_autoencoder_latent")).toBe(true);
    expect(types.has("mlp_neuron")).toBe(false);
    await page.getByTestId("filter-residual").click();
    expect(await page.locator('[data-testid="node-row"]:not([data-kind="residual"])').count()).toBe(0);
    await page.getByTestId("filter-all").click();
    await screenshot(page, "debugger-transcoders");
  });

  it("ablates a transcoder latent and traces a residual latent", async () => {
    const latent = page.locator('[data-testid="node-row"][data-node-key^="transcoder_latent"]').first();
    const key = await latent.getAttribute("data-node-key");
    await latent.getByTestId("ablate").click();
    await page.waitForURL(/ablate=transcoder_latent/);
    await settled(page);
    expect(queryOf(page).getAll("ablate")).toEqual([key]);
    await page.getByTestId("ablated-node").waitFor();
    expect(Number.isFinite(await numberAt(page, '[data-testid="loss-baseline"]'))).toBe(true);
    await page.getByTestId("ablated-node").getByRole("button", { name: "Un-ablate" }).click();
    await page.waitForURL((url) => !url.searchParams.has("ablate"));
    await settled(page);

    const residual = page.locator('[data-testid="node-row"][data-node-key^="residual_autoencoder_latent"]').first();
    await residual.getByTestId("trace").click();
    await page.waitForURL(/trace=residual_autoencoder_latent/);
    await settled(page);
    expect(await page.locator(".error-note").count()).toBe(0);
    expect(Number.isFinite(await numberAt(page, '[data-testid="loss-value"]'))).toBe(true);
    await page.getByTestId("stop-trace").click();
    await page.waitForURL((url) => !url.searchParams.has("trace"));
    await settled(page);
  });

  it("opens a transcoder latent's node page from the table: dataset examples", async () => {
    await page.locator('[data-testid="node-row"][data-node-key^="transcoder_latent"]').first().getByTestId("node-link").click();
    await page.waitForURL(new RegExp(`/${model}/transcoder_latent/\\d+/\\d+\\?prompt=`));
    await expectNodePage("Transcoder latent");
    await page.locator('[data-testid="input-tokens"] .chip').first().waitFor();
    await screenshot(page, "node-page-transcoder");
  });

  it("opens a residual latent's node page: dataset examples", async () => {
    await page.goto(`${baseUrl}/${model}/residual_autoencoder_latent/1/3?prompt=${encodeURIComponent(IOI_PROMPT)}`);
    await expectNodePage("Residual latent 1:3");
    await screenshot(page, "node-page-residual");
  });

  it("threw no uncaught errors", () => {
    expect(pageErrors).toEqual([]);
  });
});
