// The official openai npm package against a live embedserve: prints the vectors as JSON (SDK defaults, so base64).
// EMBEDSERVE_BASE_URL (ending in /v1), EMBEDSERVE_API_KEY, EMBEDSERVE_MODEL; the texts come as JSON on argv[2].
import OpenAI from "openai";

const client = new OpenAI({ apiKey: process.env.EMBEDSERVE_API_KEY, baseURL: process.env.EMBEDSERVE_BASE_URL });
const response = await client.embeddings.create({
  model: process.env.EMBEDSERVE_MODEL,
  input: JSON.parse(process.argv[2]),
});
console.log(JSON.stringify({ embeddings: response.data.map((d) => Array.from(d.embedding)), usage: response.usage }));
