// What every case shares: the gateway's base URL (from the environment, as an application would take
// it) and the clients pointed at it. Requests the clients send are recorded, so a case can assert what
// reached the gateway, not only what came back.
import OpenAI from 'openai';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';

export const baseURL = process.env.OPENAI_BASE_URL;
if (!baseURL) {
  throw new Error('OPENAI_BASE_URL is not set: point it at a running gateway, e.g. http://127.0.0.1:8000/v1');
}
const apiKey = process.env.OPENAI_API_KEY ?? 'test-key';

// The chat model (the tiny SmolLM2 under an OpenAI name) and the embeddings model.
export const CHAT_MODEL = 'gpt-4o-mini';
export const EMBEDDING_MODEL = 'text-embedding-3-small';

// Every case waits on a CPU model that other tests load too.
export const CASE = { timeout: 180_000 };

/** A fetch that keeps the JSON body of every request it sends, in order, and each request's method and
 * path (below the base URL, e.g. `POST /responses`) in `paths`. */
export function recordingFetch() {
  const sent = [];
  const paths = [];
  const prefix = new URL(baseURL).pathname.replace(/\/$/, '');
  const fetcher = async (input, init) => {
    const { pathname } = new URL(input instanceof Request ? input.url : input);
    paths.push(`${init?.method ?? 'GET'} ${pathname.slice(prefix.length)}`);
    if (typeof init?.body === 'string') sent.push(JSON.parse(init.body));
    return fetch(input, init);
  };
  return { sent, paths, fetch: fetcher };
}

/** The OpenAI Node SDK as an application builds it, plus the bodies it sent. */
export function openaiClient() {
  const { sent, paths, fetch } = recordingFetch();
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 150_000, fetch });
  return { client, sent, paths };
}

/** The AI SDK's OpenAI provider, plus the bodies it sent. */
export function aiProvider() {
  const { sent, paths, fetch } = recordingFetch();
  return { openai: createOpenAI({ baseURL, apiKey, fetch }), sent, paths };
}

/** The AI SDK's provider for OpenAI-compatible servers, as its docs set it up for one, plus the bodies it sent. */
export function compatibleProvider() {
  const { sent, fetch } = recordingFetch();
  const provider = createOpenAICompatible({
    name: 'syn4pse', baseURL, apiKey, fetch, includeUsage: true, supportsStructuredOutputs: true,
  });
  return { provider, sent };
}
