// The attribution-graph page on the demo's transcoders: computed for a prompt in the URL, drawn,
// pruned by the sliders, nodes hovered, pinned, grouped, opened, ablated in the debugger; and a
// graph file loaded from disk. Skipped on a server without transcoders.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ARTIFACTS_DIR, EXPECT_RECORDS } from "./config";
import { openPage, queryOf, screenshot, settled } from "./helpers";

const baseUrl = inject("baseUrl");
const model = inject("modelName");
const hasTranscoders = inject("hasTranscoders");

const PROMPT = "When Mary and John went to the store, John gave a drink to";
const GRAPH_TIMEOUT = 120_000; // a graph takes seconds on a CPU; the machine may be busy

let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

beforeAll(async () => {
  ({ browser, page } = await openPage(pageErrors));
});

afterAll(async () => {
  await browser?.close();
});

const nodeCount = () => page.getByTestId("graph-node").count();
const shownCount = async (what: "nodes" | "links") => Number(await page.getByTestId("graph-counts").getAttribute(`data-${what}`));
const firstFeature = () => page.locator('[data-testid="graph-node"][data-kind="feature"]');

describe.runIf(hasTranscoders)("attribution graph page", () => {
  it("computes the graph of a prompt in the URL and draws it by layer and token", async () => {
    await page.goto(`${baseUrl}/${model}/graph?prompt=${encodeURIComponent(PROMPT)}`);
    await page.getByTestId("graph-svg").waitFor({ timeout: GRAPH_TIMEOUT });
    expect(await page.getByTestId("graph-prompt").inputValue()).toBe(PROMPT);
    // every prompt token's embedding (the start token the server puts first included), a logit, features
    const embeddings = await page.locator('[data-testid="graph-node"][data-kind="embedding"]').count();
    expect(embeddings).toBeGreaterThanOrEqual(13);
    expect(await page.locator('[data-testid="graph-node"][data-kind="logit"]').count()).toBeGreaterThan(0);
    expect(await firstFeature().count()).toBeGreaterThan(5);
    expect(await page.getByTestId("graph-edge").count()).toBeGreaterThan(10);
    // logits above the embeddings (SVG y grows downwards)
    const y = async (kind: string) => Number(await page.locator(`[data-testid="graph-node"][data-kind="${kind}"] rect`).first().getAttribute("y"));
    expect(await y("logit")).toBeLessThan(await y("embedding"));
    await screenshot(page, "graph");
  });

  it("prunes client-side with the sliders, and keeps them in the URL", async () => {
    const before = await nodeCount();
    const linksBefore = await shownCount("links");
    await page.getByTestId("prune-node").fill("0.6");
    await page.waitForURL((url) => url.searchParams.get("node") === "0.6");
    await expect.poll(nodeCount).toBeLessThan(before);
    await page.getByTestId("prune-edge").fill("0.9");
    await page.waitForURL((url) => url.searchParams.get("edge") === "0.9");
    await expect.poll(() => shownCount("links")).toBeLessThan(linksBefore);
    expect(await firstFeature().count()).toBeGreaterThan(0);
    await screenshot(page, "graph-pruned");
  });

  it("shows a hovered feature's examples, pins two and groups them into a supernode", async () => {
    const feature = firstFeature().first();
    const id = await feature.getAttribute("data-node-id");
    await feature.hover();
    const panel = page.getByTestId("graph-node-panel");
    await page.waitForFunction((want) => document.querySelector('[data-testid="graph-node-panel"]')?.getAttribute("data-node-id") === want, id);
    await panel.locator('[data-testid="graph-example"], .error-note').first().waitFor();
    if (EXPECT_RECORDS) expect(await panel.getByTestId("graph-example").count()).toBeGreaterThan(0);
    await panel.getByTestId("graph-node-explanation").waitFor();
    await page.getByTestId("pin-button").click();
    await page.waitForURL((url) => url.searchParams.getAll("pin").includes(id ?? ""));

    const other = firstFeature().nth(1);
    const otherId = await other.getAttribute("data-node-id");
    await other.click({ modifiers: ["Shift"] }); // shift-click pins
    await page.waitForURL((url) => url.searchParams.getAll("pin").length === 2);
    const pinned = page.getByTestId("pinned-node");
    expect(await pinned.count()).toBe(2);
    await pinned.nth(0).getByRole("checkbox").check();
    await pinned.nth(1).getByRole("checkbox").check();
    await page.getByTestId("supernode-name").fill("names");
    await page.getByTestId("group-button").click();
    await page.waitForURL((url) => url.searchParams.get("group") === `names:${id},${otherId}`);
    await page.getByTestId("supernode").waitFor();
    expect(await page.getByTestId("supernode-box").count()).toBe(1);
    await screenshot(page, "graph-supernode");
  });

  it("opens the debugger with a feature ablated", async () => {
    const feature = firstFeature().first();
    await feature.hover();
    const link = page.getByTestId("ablate-in-debugger");
    const href = await link.getAttribute("href");
    expect(href).toContain("mlp=transcoder_latent");
    expect(href).toContain("ablate=transcoder_latent");
    await link.click();
    await page.getByTestId("debugger-page").waitFor();
    await settled(page);
    expect(queryOf(page).getAll("ablate")).toHaveLength(1);
    expect(await page.getByTestId("ablated-node").count()).toBe(1);
    expect(await page.locator(".error-note").count()).toBe(0);
    await page.goBack();
    await page.getByTestId("graph-svg").waitFor({ timeout: GRAPH_TIMEOUT });
  });

  it("opens a feature's node page on click", async () => {
    await firstFeature().first().click();
    await page.waitForURL(new RegExp(`/${model}/transcoder_latent/\\d+/\\d+\\?prompt=`));
    await page.getByTestId("node-page").waitFor();
    const records = page.getByTestId("records");
    await records.locator('[data-testid="record-sequence"], .error-note').first().waitFor();
    if (EXPECT_RECORDS) expect(await records.getByTestId("record-sequence").count()).toBeGreaterThan(0);
  });

  it("is linked from the welcome page", async () => {
    await page.goto(`${baseUrl}/`);
    expect(await page.getByTestId("graph-link").getAttribute("href")).toMatch(new RegExp(`^/${model}/graph\\?prompt=`));
  });

  it("is linked from the debugger with its prompt", async () => {
    await page.goto(`${baseUrl}/${model}/tdb`);
    await settled(page);
    const prompt = await page.getByTestId("prompt-input").inputValue();
    await page.getByTestId("graph-link").click();
    await page.getByTestId("graph-page").waitFor();
    expect(queryOf(page).get("prompt")).toBe(prompt);
    expect(await page.getByTestId("graph-prompt").inputValue()).toBe(prompt);
    await page.getByTestId("graph-svg").waitFor({ timeout: GRAPH_TIMEOUT });
  });

  it("shows the server's refusal: a distractor without a target", async () => {
    await page.getByTestId("graph-target").fill("");
    await page.getByTestId("graph-distractor").fill(" John");
    await page.getByTestId("graph-run").click();
    await page.waitForURL((url) => !url.searchParams.has("target") && url.searchParams.get("distractor") === " John");
    const note = page.locator(".error-note").filter({ hasText: "needs targetTokens" });
    await note.waitFor();
    expect(await note.textContent()).toContain("400");
  });

  it("loads a graph file", async () => {
    const response = await fetch(`${baseUrl}/attribution_graph`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "The cat sat on the mat and the dog sat on the" }),
    });
    expect(response.ok).toBe(true);
    const file = join(ARTIFACTS_DIR, "graph.json");
    writeFileSync(file, JSON.stringify(((await response.json()) as { graph: unknown }).graph));
    await page.goto(`${baseUrl}/${model}/graph`);
    await page.getByTestId("graph-file").setInputFiles(file);
    await page.getByTestId("loaded-file").waitFor();
    await page.getByTestId("graph-svg").waitFor();
    expect(await firstFeature().count()).toBeGreaterThan(0);
    expect(await page.getByTestId("loaded-file").textContent()).toContain("The cat sat");
    // a file that is not a graph is refused with the reason
    const bad = join(ARTIFACTS_DIR, "not-a-graph.json");
    writeFileSync(bad, JSON.stringify({ metadata: {}, nodes: [] }));
    await page.getByTestId("graph-file").setInputFiles(bad);
    expect(await page.getByTestId("graph-form").locator(".error-note").textContent()).toContain("not an attribution graph file");
  });

  it("threw no uncaught errors", () => {
    expect(pageErrors).toEqual([]);
  });
});
