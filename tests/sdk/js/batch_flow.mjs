// The Batch API through the official openai package: upload, create, poll, download, compare with /v1/embeddings.
import OpenAI, { toFile } from "openai";
import assert from "node:assert/strict";

const client = new OpenAI({ apiKey: process.env.EMBEDSERVE_API_KEY, baseURL: process.env.EMBEDSERVE_BASE_URL });
const texts = ["Laura is a DJ.", "Batch jobs embed whole corpora.", "A third passage."];
const lines = texts.map((input, i) =>
  JSON.stringify({ custom_id: `js-${i}`, method: "POST", url: "/v1/embeddings", body: { input, encoding_format: "float" } }),
);
const file = await client.files.create({ file: await toFile(Buffer.from(lines.join("\n") + "\n"), "in.jsonl"), purpose: "batch" });
assert.equal(file.object, "file");
let batch = await client.batches.create({ input_file_id: file.id, endpoint: "/v1/embeddings", completion_window: "24h" });
const deadline = Date.now() + 120_000;
while (!["completed", "failed", "cancelled", "expired"].includes(batch.status)) {
  assert.ok(Date.now() < deadline, `batch stuck in ${batch.status}`);
  await new Promise((r) => setTimeout(r, 200));
  batch = await client.batches.retrieve(batch.id);
}
assert.equal(batch.status, "completed");
assert.deepEqual(batch.request_counts, { total: 3, completed: 3, failed: 0 });
assert.equal(batch.progress.inputs_done, 3);
const listed = await client.batches.list({ limit: 5 });
assert.ok(listed.data.some((b) => b.id === batch.id));
const content = await (await client.files.content(batch.output_file_id)).text();
const out = content.trim().split("\n").map((l) => JSON.parse(l));
assert.deepEqual(out.map((o) => o.custom_id), ["js-0", "js-1", "js-2"]);
const online = await client.embeddings.create({ input: texts, model: out[0].response.body.model, encoding_format: "float" });
for (let i = 0; i < texts.length; i++) {
  const a = out[i].response.body.data[0].embedding;
  const b = online.data[i].embedding;
  const dot = a.reduce((s, v, k) => s + v * b[k], 0);
  assert.ok(dot > 0.99999, `cosine ${dot}`);
  assert.equal(out[i].response.body.usage.prompt_tokens, online.data.length && out[i].response.body.usage.total_tokens);
}
const deleted = await client.files.delete(file.id);
assert.equal(deleted.deleted, true);
console.log("BATCH_JS_OK");
