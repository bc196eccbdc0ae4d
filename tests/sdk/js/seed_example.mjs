// The seed page's JavaScript example, unchanged except for apiKey and baseURL, then checks on the response.
import OpenAI from "openai";
import util from "util";
import assert from "node:assert/strict";

// Initialize the API client
const client = new OpenAI({
  apiKey: process.env.EMBEDSERVE_API_KEY,
  baseURL: process.env.EMBEDSERVE_BASE_URL,
});

// Define the text for which to generate an embedding
const text = "Laura is a DJ.";

const response = await client.embeddings.create({
  input: text,
  model: "BAAI/bge-large-en-v1.5",
});

// Convert embedding to a regular array (not TypedArray)
const pythonLikeResponse = {
  ...response,
  data: response.data.map(item => ({
    ...item,
    embedding: Array.from(item.embedding),
  })),
};

// Python-like print
console.log(
  util.inspect(pythonLikeResponse, {
    depth: null,
    maxArrayLength: 8,
    compact: true,
  })
);

// What the test asserts: 1024 finite values of norm 1, 7 prompt tokens, credits reported.
const vec = pythonLikeResponse.data[0].embedding;
assert.equal(vec.length, 1024);
assert.ok(vec.every(Number.isFinite));
const norm = Math.sqrt(vec.reduce((s, v) => s + v * v, 0));
assert.ok(Math.abs(norm - 1) < 1e-4, `norm ${norm}`);
assert.equal(response.usage.prompt_tokens, 7);
assert.equal(response.model, "BAAI/bge-large-en-v1.5");
assert.equal(response.meta.usage.credits_used, 1);

// Explicit float encoding gives the same vector as the SDK's default (base64) path.
const floats = await client.embeddings.create({ input: text, model: "BAAI/bge-large-en-v1.5", encoding_format: "float" });
assert.deepEqual(Array.from(floats.data[0].embedding), vec);
console.log("SEED_JS_OK");
