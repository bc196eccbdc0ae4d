// embedserve playground: talks only to this server's OpenAI-compatible API (same origin, nothing external, no build step).
// Every piece of user or server text is written with textContent, never parsed as HTML.

const KEY_STORAGE = "embedserve.apiKey";
const DEFAULT_MODEL = "BAAI/bge-large-en-v1.5";
const SEARCH_BATCH = 32; // passages per request: small enough for a live progress bar, big enough to batch well
const SEARCH_CONCURRENCY = 2; // keep the server's queue fed while one response is decoded
const MAX_RETRIES = 3;

const $ = (id) => document.getElementById(id);
const state = { model: null, lastRequest: null, codeLang: "curl", cache: new Map() };

// ---------------------------------------------------------------- API client

class ApiError extends Error {
  constructor(message, { status = 0, code = null, type = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.type = type;
  }
}

function apiKey() {
  return $("api-key").value.trim();
}

function headers(json) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = apiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorFrom(response) {
  const text = await response.text().catch(() => "");
  let message = `${response.status} ${response.statusText}`.trim();
  let code = null;
  let type = null;
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error.message === "string") {
      ({ message, code = null, type = null } = body.error);
    } else if (body && body.detail) {
      message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch {
    if (text.trim()) message = `${message}: ${text.trim().slice(0, 300)}`;
  }
  return new ApiError(message, { status: response.status, code, type });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function send(path, init) {
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(`Could not reach the server (${err.message}). Is embedserve still running?`);
    }
    if (response.ok) return response;
    const retryable = response.status === 429 || response.status === 503;
    if (!retryable || attempt >= MAX_RETRIES) throw await errorFrom(response);
    const after = Number(response.headers.get("retry-after")) || 1;
    await sleep(Math.min(after, 10) * 1000);
  }
}

function decodeBase64(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

function buildRequest(inputs, { inputType, encodingFormat, truncate = false }) {
  const body = { input: inputs, encoding_format: encodingFormat };
  if (state.model) body.model = state.model;
  if (inputType) body.input_type = inputType;
  if (truncate) body.truncate = true;
  return body;
}

async function embed(body) {
  const started = performance.now();
  const response = await send("/v1/embeddings", { method: "POST", headers: headers(true), body: JSON.stringify(body) });
  const json = await response.json();
  const latencyMs = performance.now() - started;
  const vectors = json.data
    .slice()
    .sort((a, b) => a.index - b.index)
    .map((d) => (typeof d.embedding === "string" ? decodeBase64(d.embedding) : Float32Array.from(d.embedding)));
  const header = response.headers.get("x-embedserve-input-tokens");
  let tokens = header ? header.split(",").map(Number) : null;
  if (tokens && tokens.length !== vectors.length) tokens = null;
  if (!tokens && vectors.length === 1 && json.usage) tokens = [json.usage.prompt_tokens];
  return {
    vectors,
    tokens,
    latencyMs,
    usage: json.usage || {},
    credits: json.meta && json.meta.usage ? json.meta.usage.credits_used : null,
    requestId: response.headers.get("x-request-id") || json.id || "",
    truncated: Number(response.headers.get("x-embedserve-truncated-inputs")) || 0,
  };
}

async function loadModel() {
  const line = $("model-name");
  try {
    const response = await send("/v1/models", { headers: headers(false) });
    const json = await response.json();
    state.model = json.data && json.data.length ? json.data[0].id : null;
    line.textContent = state.model || "(none served)";
  } catch (err) {
    state.model = null;
    line.textContent = err.status === 401 ? "enter a valid API key to see the model" : `unavailable: ${err.message}`;
  }
  renderCode();
}

// ---------------------------------------------------------------- vector maths

function norm(v) {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}

function cosine(a, b, na = norm(a), nb = norm(b)) {
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += a[i] * b[i];
  return na && nb ? dot / (na * nb) : 0;
}

// ---------------------------------------------------------------- shared UI helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k === "data") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function showError(box, err) {
  box.replaceChildren();
  const detail = [err.status ? `HTTP ${err.status}` : null, err.code].filter(Boolean).join(" · ");
  box.append(el("strong", { text: "Error: " }), el("span", { class: "error-message", text: err.message }));
  if (detail) box.append(el("span", { class: "muted error-detail", text: ` (${detail})` }));
  box.hidden = false;
}

function setBusy(button, busy, label) {
  button.disabled = busy;
  button.setAttribute("aria-busy", String(busy));
  if (label) button.textContent = label;
}

function setupTabs(tablist, onSelect) {
  const tabs = [...tablist.querySelectorAll('[role="tab"]')];
  const select = (tab, focus) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
    }
    if (focus) tab.focus();
    onSelect(tab);
  };
  tablist.addEventListener("click", (e) => {
    const tab = e.target.closest('[role="tab"]');
    if (tab) select(tab, false);
  });
  tablist.addEventListener("keydown", (e) => {
    const i = tabs.indexOf(document.activeElement);
    if (i < 0) return;
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    select(tabs[(next + tabs.length) % tabs.length], true);
  });
}

function submitOnCtrlEnter(field, form) {
  field.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
}

// ---------------------------------------------------------------- embed tab

function embedOptions() {
  return {
    inputType: document.querySelector('input[name="input-type"]:checked').value,
    encodingFormat: $("encoding-format").value,
  };
}

function embedTexts() {
  return $("embed-texts").value.split("\n").map((t) => t.trim()).filter(Boolean);
}

function formatMs(ms) {
  return ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function renderVectors(texts, result) {
  const body = $("vectors-table").querySelector("tbody");
  body.replaceChildren();
  result.vectors.forEach((v, i) => {
    const first = Array.from(v.slice(0, 6), (x) => x.toFixed(4)).join(", ");
    body.append(
      el("tr", { data: { index: String(i) } },
        el("td", { text: String(i + 1) }),
        el("td", { class: "text-cell", text: texts[i], title: texts[i] }),
        el("td", { class: "num tokens", text: result.tokens ? String(result.tokens[i]) : "–" }),
        el("td", { class: "mono first-values", text: `[${first}${v.length > 6 ? ", …" : ""}]` }),
        el("td", { class: "num norm", text: norm(v).toFixed(4) }),
      ),
    );
  });
}

function heatColor(value) {
  // 0 → pale, 1 → deep blue; negatives tint orange. Text colour flips for contrast.
  const t = Math.max(-1, Math.min(1, value));
  const hue = t >= 0 ? 215 : 25;
  const light = 96 - Math.abs(t) * 56;
  return { background: `hsl(${hue} 75% ${light}%)`, color: light < 60 ? "#fff" : "#111" };
}

function renderHeatmap(texts, vectors) {
  const table = $("heatmap");
  const norms = vectors.map(norm);
  const head = el("tr", {}, el("td", { class: "corner" }));
  texts.forEach((t, j) => head.append(el("th", { scope: "col", title: t, text: `T${j + 1}` })));
  const body = el("tbody");
  vectors.forEach((a, i) => {
    const row = el("tr", {}, el("th", { scope: "row", title: texts[i], text: `T${i + 1}` }));
    vectors.forEach((b, j) => {
      const value = cosine(a, b, norms[i], norms[j]);
      const cell = el("td", {
        class: "cell",
        text: value.toFixed(3),
        title: `T${i + 1} · T${j + 1}: cosine ${value.toFixed(4)}`,
        data: { row: String(i), col: String(j), value: String(value) },
      });
      Object.assign(cell.style, heatColor(value));
      row.append(cell);
    });
    body.append(row);
  });
  table.replaceChildren(el("thead", {}, head), body);
}

async function onEmbed(event) {
  event.preventDefault();
  const box = $("embed-error");
  const button = $("embed-button");
  box.hidden = true;
  const texts = embedTexts();
  if (!texts.length) {
    showError(box, new ApiError("Enter at least one text."));
    return;
  }
  const body = buildRequest(texts, embedOptions());
  state.lastRequest = body;
  renderCode();
  setBusy(button, true, "Embedding…");
  try {
    const result = await embed(body);
    $("stat-latency").textContent = formatMs(result.latencyMs);
    $("stat-tokens").textContent = String(result.usage.prompt_tokens ?? "–");
    $("stat-credits").textContent = result.credits === null ? "–" : String(result.credits);
    $("stat-dim").textContent = String(result.vectors[0].length);
    $("stat-request-id").textContent = result.requestId;
    renderVectors(texts, result);
    renderHeatmap(texts, result.vectors);
    $("embed-results").hidden = false;
  } catch (err) {
    $("embed-results").hidden = true;
    showError(box, err);
  } finally {
    setBusy(button, false, "Embed");
  }
}

// ---------------------------------------------------------------- code snippets

function currentRequest() {
  return state.lastRequest || buildRequest(embedTexts().length ? embedTexts() : ["Laura is a DJ."], embedOptions());
}

function snippet(lang, body) {
  const base = `${location.origin}/v1`;
  const model = body.model || state.model || DEFAULT_MODEL;
  const input = JSON.stringify(body.input);
  const withModel = { model, ...body };
  if (lang === "curl") {
    const json = JSON.stringify(withModel, null, 2).replaceAll("'", "'\\''");
    return [
      `curl ${base}/embeddings \\`,
      `  -H "Authorization: Bearer $EMBEDSERVE_API_KEY" \\`,
      `  -H "Content-Type: application/json" \\`,
      `  -d '${json}'`,
    ].join("\n");
  }
  if (lang === "python") {
    const extra = body.input_type ? `    extra_body={"input_type": "${body.input_type}"},\n` : "";
    return (
      `import os\n\nfrom openai import OpenAI\n\nclient = OpenAI(\n    api_key=os.environ["EMBEDSERVE_API_KEY"],\n` +
      `    base_url="${base}",\n)\n\nresponse = client.embeddings.create(\n    model=${JSON.stringify(model)},\n` +
      `    input=${input},\n    encoding_format="${body.encoding_format}",\n${extra})\n` +
      `print(response.usage, len(response.data), "embeddings")\n`
    );
  }
  const extra = body.input_type ? `  input_type: "${body.input_type}", // embedserve extension, sent as-is\n` : "";
  return (
    `import OpenAI from "openai";\n\nconst client = new OpenAI({\n  apiKey: process.env.EMBEDSERVE_API_KEY,\n` +
    `  baseURL: "${base}",\n});\n\nconst response = await client.embeddings.create({\n  model: ${JSON.stringify(model)},\n` +
    `  input: ${input},\n  encoding_format: "${body.encoding_format}",\n${extra}});\n` +
    `console.log(response.usage, response.data.length, "embeddings");\n`
  );
}

function renderCode() {
  $("code-block").textContent = snippet(state.codeLang, currentRequest());
}

async function copyCode() {
  const status = $("copy-status");
  const text = $("code-block").textContent;
  try {
    await navigator.clipboard.writeText(text);
    status.textContent = "Copied to the clipboard.";
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("code-block"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
  }
}

// ---------------------------------------------------------------- semantic search tab

function passageFromJson(line) {
  const value = JSON.parse(line);
  if (typeof value === "string") return value;
  for (const field of ["text", "passage", "content", "document", "body"]) {
    if (value && typeof value[field] === "string") return value[field];
  }
  const first = value && Object.values(value).find((v) => typeof v === "string");
  if (first === undefined) throw new Error("no text field");
  return first;
}

function parsePassageFile(name, text) {
  const lines = text.split(/\r?\n/).filter((l) => l.trim());
  if (!/\.(jsonl|ndjson)$/i.test(name)) return lines.map((l) => l.trim());
  return lines.map((line, i) => {
    try {
      return passageFromJson(line).replace(/\s+/g, " ").trim();
    } catch (err) {
      throw new ApiError(`${name}, line ${i + 1}: not a JSON string or object with a text field (${err.message}).`);
    }
  });
}

function passages() {
  return $("passages").value.split("\n").map((t) => t.trim()).filter(Boolean);
}

function updatePassageCount() {
  const n = passages().length;
  $("passage-count").textContent = `${n} passage${n === 1 ? "" : "s"}`;
}

async function onPassageFile() {
  const file = $("passages-file").files[0];
  if (!file) return;
  const box = $("search-error");
  box.hidden = true;
  try {
    $("passages").value = parsePassageFile(file.name, await file.text()).join("\n");
    updatePassageCount();
  } catch (err) {
    showError(box, err);
  }
}

function setProgress(done, total, label) {
  const bar = $("search-progress");
  bar.max = Math.max(total, 1);
  bar.value = done;
  $("search-progress-label").textContent = label;
}

async function embedPassages(items) {
  const model = state.model; // fixed for this run: the model name may arrive while batches are in flight
  const cacheKey = (p) => `${model}\u0000${p}`;
  const missing = [...new Set(items.filter((p) => !state.cache.has(cacheKey(p))))];
  const batches = [];
  for (let i = 0; i < missing.length; i += SEARCH_BATCH) batches.push(missing.slice(i, i + SEARCH_BATCH));
  let done = 0;
  let truncated = 0;
  const total = missing.length;
  setProgress(0, total, `Embedding ${total} passages (${items.length - total} cached)…`);
  const worker = async () => {
    while (batches.length) {
      const batch = batches.shift();
      // Long passages are truncated to the model's context (and counted in the summary) rather than refused.
      const options = { inputType: "document", encodingFormat: "base64", truncate: true };
      const result = await embed(buildRequest(batch, options));
      batch.forEach((p, i) => state.cache.set(cacheKey(p), result.vectors[i]));
      done += batch.length;
      truncated += result.truncated;
      setProgress(done, total, `Embedded ${done} of ${total} passages…`);
    }
  };
  await Promise.all(Array.from({ length: SEARCH_CONCURRENCY }, worker));
  return { vectors: items.map((p) => state.cache.get(cacheKey(p))), truncated };
}

function renderRanking(items, scores, { topK, query, ms, truncated }) {
  const order = scores.map((s, i) => [s, i]).sort((a, b) => b[0] - a[0]);
  const shown = topK > 0 ? order.slice(0, topK) : order;
  const list = $("ranking");
  list.replaceChildren();
  for (const [score, i] of shown) {
    list.append(
      el("li", { data: { index: String(i), score: String(score) } },
        el("span", { class: "score", text: score.toFixed(4), "aria-label": `score ${score.toFixed(4)}` }),
        el("span", { class: "passage", text: items[i] }),
      ),
    );
  }
  const cut = truncated ? ` ${truncated} long passage(s) were truncated to the model's context.` : "";
  $("search-summary").textContent =
    `${items.length} passages ranked by cosine with “${query}” in ${formatMs(ms)}; showing ${shown.length}.${cut}`;
  $("search-results").hidden = false;
}

async function onSearch(event) {
  event.preventDefault();
  const box = $("search-error");
  const button = $("search-button");
  box.hidden = true;
  const items = passages();
  const query = $("query").value.trim();
  if (!items.length || !query) {
    showError(box, new ApiError(items.length ? "Type a query." : "Paste or load some passages first."));
    return;
  }
  const started = performance.now();
  setBusy(button, true, "Searching…");
  try {
    const { vectors, truncated } = await embedPassages(items);
    const q = await embed(buildRequest([query], { inputType: "query", encodingFormat: "base64" }));
    const qv = q.vectors[0];
    const qn = norm(qv);
    const scores = vectors.map((v) => cosine(qv, v, qn));
    const ms = performance.now() - started;
    setProgress(1, 1, `Done: ${items.length} passages in ${formatMs(ms)}.`);
    renderRanking(items, scores, { topK: Number($("top-k").value), query, ms, truncated });
  } catch (err) {
    setProgress(0, 1, "Stopped by an error.");
    showError(box, err);
  } finally {
    setBusy(button, false, "Search");
  }
}

// ---------------------------------------------------------------- start-up

function init() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  let timer = null;
  key.addEventListener("input", () => {
    if (key.value.trim()) sessionStorage.setItem(KEY_STORAGE, key.value.trim());
    else sessionStorage.removeItem(KEY_STORAGE);
    clearTimeout(timer);
    timer = setTimeout(loadModel, 400);
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    key.value = "";
    loadModel();
  });

  setupTabs($("mode-tabs"), (tab) => {
    $("panel-embed").hidden = tab.id !== "tab-embed";
    $("panel-search").hidden = tab.id !== "tab-search";
  });
  setupTabs($("code-tabs"), (tab) => {
    state.codeLang = tab.dataset.lang;
    $("code-panel").setAttribute("aria-labelledby", tab.id);
    renderCode();
  });

  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadModel();
  });
  $("embed-form").addEventListener("submit", onEmbed);
  $("search-form").addEventListener("submit", onSearch);
  $("copy-code").addEventListener("click", copyCode);
  $("passages-file").addEventListener("change", onPassageFile);
  $("passages").addEventListener("input", updatePassageCount);
  submitOnCtrlEnter($("embed-texts"), $("embed-form"));
  submitOnCtrlEnter($("passages"), $("search-form"));
  for (const id of ["embed-texts", "encoding-format"]) $(id).addEventListener("input", () => {
    state.lastRequest = null;
    renderCode();
  });
  document.querySelectorAll('input[name="input-type"]').forEach((r) => r.addEventListener("change", () => {
    state.lastRequest = null;
    renderCode();
  }));
  updatePassageCount();
  renderCode();
  loadModel();
  checkWeights();
  document.body.dataset.ready = "true";
}

async function checkWeights() {
  // /ready is open (no key needed), so the warning shows before a key is typed.
  try {
    const response = await fetch("/ready");
    const json = await response.json();
    $("random-weights-banner").hidden = json.random_weights !== true;
  } catch (err) {
    // an unreachable server shows its own errors on the first request
  }
}

init();
