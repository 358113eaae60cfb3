// Talking to the gateway as any client does: its public HTTP APIs, with the key the page holds.

const KEY = "syn4pse.api-key";

export function apiKey() {
  return localStorage.getItem(KEY) || "";
}

export function setApiKey(value) {
  if (value) localStorage.setItem(KEY, value);
  else localStorage.removeItem(KEY);
}

export function authHeaders(key = apiKey()) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The API's own words for a failed answer (OpenAI's envelope, or Deepgram's). */
async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    message = body?.error?.message || body?.err_msg || message;
  } catch {
    /* not JSON: the status says it */
  }
  return new ApiError(response.status, message);
}

export async function request(path, { method = "GET", json, body, headers = {}, signal, key } = {}) {
  const init = { method, signal, headers: { ...authHeaders(key), ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response;
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

export async function postJson(path, json, options = {}) {
  return (await request(path, { ...options, method: "POST", json })).json();
}

/** Server-sent events of a streamed answer, as parsed JSON, until ``[DONE]`` or the end. */
export async function* sse(path, json, signal) {
  const response = await request(path, { method: "POST", json, signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

/** Every configured model with its type: the admin view when this key may read it, else the public list. */
export async function models() {
  try {
    const body = await getJson("/admin/models");
    return body.data ?? body.models ?? body;
  } catch {
    const body = await getJson("/v1/models");
    return body.data.map((m) => ({ id: m.id, type: "unknown", aliases: [] }));
  }
}

export function showError(error) {
  const box = document.getElementById("error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  if (error.name === "AbortError") return;
  box.textContent = error.message || String(error);
  box.hidden = false;
}
