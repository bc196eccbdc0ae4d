// The Vercel AI SDK's OpenAI-compatible provider against a live embedserve: prints the vectors as JSON.
// EMBEDSERVE_BASE_URL (ending in /v1), EMBEDSERVE_API_KEY, EMBEDSERVE_MODEL; the texts come as JSON on argv[2].
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { embedMany } from "ai";

const provider = createOpenAICompatible({
  name: "embedserve",
  baseURL: process.env.EMBEDSERVE_BASE_URL,
  apiKey: process.env.EMBEDSERVE_API_KEY,
});
const { embeddings, usage } = await embedMany({
  model: provider.textEmbeddingModel(process.env.EMBEDSERVE_MODEL),
  values: JSON.parse(process.argv[2]),
});
console.log(JSON.stringify({ embeddings, usage }));
