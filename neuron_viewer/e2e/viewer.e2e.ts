// The viewer against a real activation server: welcome page, debugger (prompt, node table,
// ablation, tracing, reload), node pages, errors. Screenshots go to test-artifacts/screenshots.
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AUTOENCODERS, EXPECT_RECORDS, IOI_PROMPT, RANDOM_FAMILY, STRICT, TOP_K } from "./config";
import { openPage, numberAt, queryOf, rowKeys, screenshot, settled } from "./helpers";

const baseUrl = inject("baseUrl");
const model = inject("modelName");
const EXPECTED_COUNTS = inject("expectedCounts");
const TYPED_PROMPT_TOKENS = inject("typedPromptTokens");

let browser: Browser;
let page: Page;
let nTokens = 0; // of the debugger's prompt
const pageErrors: string[] = [];

beforeAll(async () => {
  ({ browser, page } = await openPage(pageErrors));
});

afterAll(async () => {
  await browser?.close();
});

describe("welcome page", () => {
  it("shows the model, its layers and node counts, links into the debugger, and finds a node", async () => {
    await page.goto(`${baseUrl}/`);
    await page.getByTestId("welcome-page").waitFor();
    expect(Number(await page.getByTestId("n-layers").textContent())).toBeGreaterThan(0);
    await page.getByTestId("count-attention_head").waitFor();
    const heads = await page.getByTestId("count-attention_head").textContent();
    const neurons = await page.getByTestId("count-mlp_neuron").textContent();
    if (EXPECTED_COUNTS) {
      expect(heads).toContain(`${EXPECTED_COUNTS.heads} per layer`);
      expect(neurons).toContain(`${EXPECTED_COUNTS.neurons} per layer`);
    }
    if (AUTOENCODERS) {
      await page.getByTestId("count-attention_autoencoder_latent").waitFor();
      const latents = await page.getByTestId("count-mlp_autoencoder_latent").textContent();
      if (EXPECTED_COUNTS) expect(latents).toContain(`${EXPECTED_COUNTS.latents} per layer`);
    }
    expect(await page.getByTestId("example-link").getAttribute("href")).toContain(`/${model}/tdb?prompt=`);
    await screenshot(page, "welcome");

    // search by layer and index opens that node's page
    const search = page.getByTestId("node-search");
    await search.getByLabel("layer").selectOption("1");
    await search.getByLabel("index").fill("5");
    await search.getByRole("button", { name: "Open node page" }).click();
    await page.waitForURL(new RegExp(`/${model}/mlp_neuron/1/5`));
    await page.getByTestId("node-page").waitFor();
    expect(await page.getByTestId("node-title").textContent()).toContain("MLP neuron");
  });
});

describe("debugger page", () => {
  let unablatedLoss = 0;

  it("tokenizes the prompt live and fills the node table for an IOI prompt", async () => {
    await page.goto(`${baseUrl}/${model}/tdb?k=${TOP_K}`);
    await settled(page);
    expect(queryOf(page).get("prompt")).not.toBeNull(); // the state was written into the URL

    const prompt = "<|endoftext|>When Alice and Tom went to the park, Tom handed a ball to";
    await page.getByTestId("prompt-input").fill(prompt);
    // live tokenisation: the token chips follow the typed prompt before it is submitted
    await page.waitForFunction(
      () => Array.from(document.querySelectorAll('[data-testid="prompt-tokens"] .token-chip')).some((c) => c.textContent?.includes("Alice")),
    );
    await page.getByTestId("target-input").fill(" Alice");
    await page.getByTestId("distractor-input").fill(" Tom");
    await page.getByTestId("run").click();
    await page.waitForURL(/Alice/);
    await settled(page);

    const rows = page.getByTestId("node-row");
    expect(await rows.count()).toBeGreaterThan(5);
    expect(await page.locator('[data-testid="node-row"][data-kind="attention"]').count()).toBeGreaterThan(0);
    const chips = await page.locator('[data-testid="prompt-tokens"] .token-chip').allTextContents();
    // the prompt's start token: GPT-2's end-of-text, or the BOS token of a model that has one
    expect(chips[0]).toMatch(RANDOM_FAMILY === "llama" ? /<bos>/ : /<\|endoftext\|>/);
    expect(chips.at(-1)).toContain("to");
    nTokens = chips.length;
    expect(nTokens).toBeGreaterThan(10);
    expect(await page.getByTestId("logits").locator("tbody tr").count()).toBeGreaterThan(0);
    expect(await page.getByTestId("token-summary").locator("tbody tr").count()).toBe(nTokens);
    expect(await page.getByTestId("layer-summary").locator("tbody tr").count()).toBeGreaterThan(0);
    unablatedLoss = await numberAt(page, '[data-testid="loss-value"]');
    expect(Number.isFinite(unablatedLoss)).toBe(true);
    expect(queryOf(page).getAll("target")).toEqual([" Alice"]);
    await screenshot(page, "debugger");
  });

  it("swaps target and distractor, and back", async () => {
    await page.getByTestId("swap").click();
    await page.waitForURL((url) => url.searchParams.get("target") === " Tom");
    await settled(page);
    const swapped = await numberAt(page, '[data-testid="loss-value"]');
    expect(swapped).toBeCloseTo(-unablatedLoss, 4);
    await page.getByTestId("swap").click();
    await page.waitForURL((url) => url.searchParams.get("target") === " Alice");
    await settled(page);
  });

  it("sorts the table by a column", async () => {
    await page.getByTestId("sort-layer").click();
    await page.waitForURL(/sort=layer/);
    const layers = await page.locator('[data-testid="layer-cell"]').allTextContents();
    const numeric = layers.map((l) => (l === "–" ? -1 : Number(l)));
    expect(numeric).toEqual([...numeric].sort((a, b) => a - b));
    await page.getByTestId("sort-totalEffect").click(); // back to |est. total effect|
    await page.waitForURL((url) => !url.searchParams.has("sort"));
  });

  it("ablates the top head and shows ablated next to unablated values", async () => {
    await page.getByTestId("filter-attention").click();
    // the head that pushes the target most: est. total effect, largest first (the default order,
    // by magnitude, may put a head that pushes the distractor on top)
    await page.getByTestId("sort-totalEffect").click();
    await page.waitForURL((url) => url.searchParams.get("dir") === "desc");
    const top = page.locator('[data-testid="node-row"][data-kind="attention"]').first();
    const key = await top.getAttribute("data-node-key");
    expect(key).toMatch(/^attention_head:/);
    await top.getByTestId("ablate").click();
    await page.waitForURL(/ablate=/);
    await settled(page);
    expect(queryOf(page).getAll("ablate")).toEqual([key]);
    await page.getByTestId("ablated-node").waitFor();

    const ablated = await numberAt(page, '[data-testid="loss-value"]');
    const baseline = await numberAt(page, '[data-testid="loss-baseline"]');
    expect(baseline).toBeCloseTo(unablatedLoss, 5);
    expect(ablated).not.toBeCloseTo(baseline, 6);
    // a trained model: the top head carries much of the answer
    if (STRICT) expect(ablated).toBeLessThan(0.9 * baseline);
    expect(await page.getByTestId("baseline").count()).toBeGreaterThan(0); // per-node unablated values
    await screenshot(page, "debugger-ablated");
    await page.getByTestId("sort-totalEffect").click(); // desc -> asc -> by magnitude again
    await page.getByTestId("sort-totalEffect").click();
    await page.waitForURL((url) => !url.searchParams.has("dir"));
  });

  it("traces a node upstream (an MLP neuron, a head through V onto it, a head through Q)", async () => {
    await page.getByTestId("filter-all").click();
    const mlp = page.locator('[data-testid="node-row"][data-kind="mlp"]').first();
    const mlpKey = await mlp.getAttribute("data-node-key");
    await mlp.getByTestId("trace").click();
    await page.waitForURL(/trace=/);
    await settled(page);
    expect(queryOf(page).get("trace")).toBe(mlpKey);
    await expect.poll(() => page.getByTestId("trace-info").textContent()).toContain("Tracing upstream");
    expect(await page.getByTestId("loss-summary").textContent()).toContain("Traced node");
    // the traced node's value (the server's activationValueForBackwardPass), not NaN
    const tracedValue = await numberAt(page, '[data-testid="loss-value"]');
    expect(Number.isFinite(tracedValue)).toBe(true);
    expect(await page.getByTestId("loss-value").textContent()).not.toContain("NaN");
    expect(await page.getByTestId("node-row").count()).toBeGreaterThan(0);

    // a head through V, onto the traced neuron: the neuron stays as the downstream node
    await page.getByTestId("filter-attention").click();
    const viaV = page.locator('[data-testid="node-row"][data-kind="attention"]').first();
    await viaV.getByTestId("trace-V").click();
    await page.waitForURL((url) => url.searchParams.get("traceType") === "V" && url.searchParams.get("downstream") === mlpKey);
    await settled(page);
    expect(await page.getByTestId("trace-downstream").textContent()).toContain("onto");
    expect(await page.getByTestId("loss-summary").textContent()).toContain("downstream node");
    expect(Number.isFinite(await numberAt(page, '[data-testid="loss-value"]'))).toBe(true);
    expect(await page.getByTestId("node-row").count()).toBeGreaterThan(0);

    const head = page.locator('[data-testid="node-row"][data-kind="attention"]').first();
    const headKey = await head.getAttribute("data-node-key");
    await head.getByTestId("trace-Q").click();
    await page.waitForURL((url) => url.searchParams.get("traceType") === "Q");
    await settled(page);
    expect(queryOf(page).get("trace")).toBe(headKey);
    await screenshot(page, "debugger-traced");
  });

  it("reloads the URL and gets the same view", async () => {
    const url = page.url();
    const keys = await rowKeys(page, 20);
    const loss = await page.getByTestId("loss-summary").textContent();
    const prompt = await page.getByTestId("prompt-input").inputValue();
    await page.reload();
    await settled(page);
    expect(page.url()).toBe(url);
    expect(await rowKeys(page, 20)).toEqual(keys);
    expect(await page.getByTestId("prompt-input").inputValue()).toBe(prompt);
    expect(await page.getByTestId("filter-attention").getAttribute("aria-pressed")).toBe("true");
    expect(await page.getByTestId("ablated-node").count()).toBe(1);
    // the same numbers (the timing at the end of the line may differ)
    const strip = (s: string | null) => (s ?? "").replace(/·[^·]*s$/, "");
    expect(strip(await page.getByTestId("loss-summary").textContent())).toBe(strip(loss));
  });

  it("stops tracing and un-ablates", async () => {
    await page.getByTestId("stop-trace").click();
    await page.waitForURL((url) => !url.searchParams.has("trace"));
    await settled(page);
    await page.getByTestId("ablated-node").getByRole("button", { name: "Un-ablate" }).click();
    await page.waitForURL((url) => !url.searchParams.has("ablate"));
    await settled(page);
    expect(await page.getByTestId("loss-baseline").count()).toBe(0);
    expect(await numberAt(page, '[data-testid="loss-value"]')).toBeCloseTo(unablatedLoss, 5);
  });

  it.runIf(AUTOENCODERS)("switches MLP neurons <-> latents and heads <-> attention latents", async () => {
    const types = async () => new Set((await rowKeys(page, 1000)).map((k) => k.split(":")[0]));
    await page.getByTestId("filter-all").click();
    await page.getByTestId("mlp-latents").click();
    await page.waitForURL(/mlp=autoencoder_latent/);
    await settled(page);
    let seen = await types();
    expect(seen.has("mlp_neuron")).toBe(false);
    expect(seen.has("attention_head")).toBe(true);

    await page.getByTestId("attn-latents").click();
    await page.waitForURL(/attn=autoencoder_latent/);
    await settled(page);
    seen = await types();
    expect(seen.has("attention_head")).toBe(false);
    expect(seen.has("attention_autoencoder_latent")).toBe(true);

    // a traced latent shows its value (its pre-activation)
    const traced = page.locator('[data-testid="node-row"][data-node-key^="mlp_autoencoder_latent"]').first();
    await traced.getByTestId("trace").click();
    await page.waitForURL(/trace=mlp_autoencoder_latent/);
    await settled(page);
    expect(Number.isFinite(await numberAt(page, '[data-testid="loss-value"]'))).toBe(true);
    await page.getByTestId("stop-trace").click();
    await page.waitForURL((url) => !url.searchParams.has("trace"));
    await settled(page);

    // latents can be ablated like any node
    const latent = page.locator('[data-testid="node-row"][data-node-key^="attention_autoencoder_latent"]').first();
    await latent.getByTestId("ablate").click();
    await page.waitForURL(/ablate=attention_autoencoder_latent/);
    await settled(page);
    expect(await numberAt(page, '[data-testid="loss-baseline"]')).toBeCloseTo(unablatedLoss, 4);
    await screenshot(page, "debugger-latents");

    await page.getByTestId("ablated-node").getByRole("button", { name: "Un-ablate" }).click();
    await page.getByTestId("mlp-neurons").click();
    await page.getByTestId("attn-heads").click();
    await page.waitForURL((url) => !url.searchParams.has("mlp") && !url.searchParams.has("attn") && !url.searchParams.has("ablate"));
    await settled(page);
    seen = await types();
    expect(seen.has("attention_head") && seen.has("mlp_neuron")).toBe(true);
  });

  it("shows the server's error for a target that is not one token", async () => {
    await page.getByTestId("target-input").fill(" Alice Smith");
    await page.getByTestId("run").click();
    const note = page.locator(".error-note").filter({ hasText: "not one" });
    await note.waitFor();
    expect(await note.textContent()).toContain("400");
    await screenshot(page, "debugger-error");
    await page.goBack();
    await settled(page);
  });
});

describe("node pages", () => {
  it("opens an MLP neuron's page from the table: activations on the prompt, upvoted tokens, examples", async () => {
    await page.getByTestId("filter-mlp").click();
    const link = page.locator('[data-testid="node-row"][data-kind="mlp"]').first().getByTestId("node-link");
    await link.click();
    await page.getByTestId("node-page").waitFor();
    expect(page.url()).toMatch(new RegExp(`/${model}/mlp_neuron/\\d+/\\d+\\?prompt=`));
    expect(await page.getByTestId("node-title").textContent()).toContain("MLP neuron");

    // activations on the debugger's prompt (carried over in the URL)
    await page.locator('[data-testid="prompt-heatmap"] .token').first().waitFor();
    expect(await page.locator('[data-testid="prompt-heatmap"] .token').count()).toBe(nTokens);
    // tokens it upvotes (logit lens)
    await page.locator('[data-testid="output-tokens"] .chip').first().waitFor();
    expect(await page.locator('[data-testid="output-tokens"] .chip').count()).toBeGreaterThan(5);
    // dataset examples, or (while the server has no records) the reason, shown, not swallowed
    const records = page.getByTestId("records");
    await records.locator('[data-testid="record-sequence"], .error-note').first().waitFor();
    if (EXPECT_RECORDS) {
      expect(await records.getByTestId("record-sequence").count()).toBeGreaterThan(0);
    } else if ((await records.getByTestId("record-sequence").count()) === 0) {
      expect(await records.locator(".error-note").textContent()).toContain("No dataset records for this model");
    }
    await page.getByTestId("explanation").locator(".error-note, .explanations, p.muted").first().waitFor();
    await screenshot(page, "node-page");

    // a prompt typed on the page
    await page.getByTestId("node-prompt-input").fill("The cat sat on the mat");
    await page.getByTestId("node-prompt-run").click();
    await page.waitForURL(/cat/);
    await expect.poll(() => page.locator('[data-testid="prompt-heatmap"] .token').count()).toBe(TYPED_PROMPT_TOKENS);
  });

  it("shows an attention head's activations as token pairs", async () => {
    await page.goto(`${baseUrl}/${model}/attention_head/0/1?prompt=${encodeURIComponent(IOI_PROMPT)}`);
    await page.locator('[data-testid="prompt-heatmap"] .token').first().waitFor();
    expect(await page.locator('[data-testid="prompt-heatmap"] .token-query').count()).toBe(1);
    expect(await page.getByTestId("prompt-heatmap").textContent()).toContain("strongest pair");
    await page.getByTestId("records").locator('[data-testid="record-sequence"], .error-note').first().waitFor();
    await screenshot(page, "node-page-head");
  });

  it.runIf(AUTOENCODERS)("shows an MLP latent's activations and upvoted tokens", async () => {
    await page.goto(`${baseUrl}/${model}/mlp_autoencoder_latent/0/3?prompt=${encodeURIComponent(IOI_PROMPT)}`);
    await page.locator('[data-testid="prompt-heatmap"] .token').first().waitFor();
    expect(await page.getByTestId("node-title").textContent()).toContain("MLP latent 0:3");
    // its write's logit lens, and the input tokens that raise it (each token embedding pushed
    // through the MLP, as the original client asks for them)
    await page.locator('[data-testid="output-tokens"] .chip').first().waitFor();
    await page.locator('[data-testid="input-tokens"] .chip').first().waitFor();
    expect(await page.locator('[data-testid="input-tokens"] .chip').count()).toBeGreaterThan(5);
    await screenshot(page, "node-page-mlp-latent");
  });

  it.runIf(AUTOENCODERS)("shows an attention latent by token pair: its records and its share of each pair", async () => {
    await page.goto(`${baseUrl}/${model}/attention_autoencoder_latent/1/5?prompt=${encodeURIComponent(IOI_PROMPT)}`);
    await page.getByTestId("token-pair-link").click();
    await page.waitForURL(new RegExp(`/${model}/autoencoder_latent_by_token_pair/1/5`));
    expect(await page.getByTestId("node-title").textContent()).toContain("Attention latent by token pair 1:5");
    // the client's /derived_attention_scalars with the latent as the within-layer gradient
    await page.locator('[data-testid="prompt-heatmap"] .token').first().waitFor();
    expect(await page.getByTestId("prompt-activations").locator(".error-note").count()).toBe(0);
    // /attention_head_record and /existing_explanations with its by-token-pair dst
    const records = page.getByTestId("records");
    await records.locator('[data-testid="record-sequence"], .error-note').first().waitFor();
    if (EXPECT_RECORDS) expect(await records.getByTestId("record-sequence").count()).toBeGreaterThan(0);
    await page.getByTestId("explanation").locator(".error-note, .explanations, p.muted").first().waitFor();
    await screenshot(page, "node-page-token-pairs");
  });

  it("shows a generate-explanation failure instead of swallowing it", async () => {
    await page.getByTestId("generate-explanation").click();
    await page.getByTestId("explanation").locator(".error-note, .explanations li").first().waitFor();
  });
});

describe("the page itself", () => {
  it("threw no uncaught errors", () => {
    expect(pageErrors).toEqual([]);
  });
});
