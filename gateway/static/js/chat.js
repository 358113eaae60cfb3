// Chat: streamed answers from /v1/chat/completions, images as image_url parts, the conversation kept here.

import { render } from "./markdown.js";
import { showError, sse } from "./api.js";
import { snapshot } from "./media.js";

const $ = (id) => document.getElementById(id);
let history = [];
let pending = [];
let running = null;

function bubble(role, html) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  item.dataset.testid = role === "user" ? "message-user" : "message-assistant";
  item.setAttribute("data-testid", item.dataset.testid);
  item.innerHTML = html;
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function escapeText(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div.innerHTML;
}

function addImage(dataUrl) {
  pending.push(dataUrl);
  const img = document.createElement("img");
  img.src = dataUrl;
  img.alt = `image ${pending.length} to send`;
  $("attachments").append(img);
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function send(event) {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text && !pending.length) return;
  showError(null);
  const content = [...(text ? [{ type: "text", text }] : []),
    ...pending.map((url) => ({ type: "image_url", image_url: { url } }))];
  bubble("user", escapeText(text) + pending.map((u) => `<img src="${u}" alt="an image you sent">`).join(""));
  history.push({ role: "user", content });
  pending = [];
  $("attachments").replaceChildren();
  $("chat-input").value = "";
  const system = $("system-prompt").value.trim();
  const body = {
    model: $("model-select").value, stream: true, temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
    messages: [...(system ? [{ role: "system", content: system }] : []), ...history],
  };
  const answer = bubble("assistant", "");
  answer.setAttribute("aria-busy", "true");
  running = new AbortController();
  $("stop").disabled = false;
  $("send").disabled = true;
  let said = "";
  try {
    for await (const chunk of sse("/v1/chat/completions", body, running.signal)) {
      said += chunk.choices?.[0]?.delta?.content ?? "";
      answer.innerHTML = render(said);
    }
  } catch (error) {
    showError(error);
  } finally {
    answer.removeAttribute("aria-busy");
    history.push({ role: "assistant", content: said });
    running = null;
    $("stop").disabled = true;
    $("send").disabled = false;
  }
}

export function setUpChat() {
  $("chat-form").addEventListener("submit", send);
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) $("chat-form").requestSubmit();
  });
  $("stop").addEventListener("click", () => running?.abort());
  $("clear-chat").addEventListener("click", () => {
    history = [];
    $("messages").replaceChildren();
  });
  $("attach").addEventListener("change", async (e) => {
    for (const file of e.target.files) addImage(await readFile(file));
    e.target.value = "";
  });
  $("chat-input").addEventListener("paste", async (e) => {
    for (const item of e.clipboardData?.items ?? []) {
      if (item.type.startsWith("image/")) addImage(await readFile(item.getAsFile()));
    }
  });
  $("snapshot").addEventListener("click", async () => {
    try {
      addImage(await snapshot());
    } catch (error) {
      showError(error);
    }
  });
}
