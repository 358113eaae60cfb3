// The playground: tabs, the API key, and the model pickers filled from the gateway's own lists.

import { apiKey, getJson, models, setApiKey, showError } from "./api.js";
import { setUpAudio, loadVoices } from "./audio.js";
import { setUpChat } from "./chat.js";
import { setUpEmbeddings } from "./embeddings.js";
import { refresh, setUpStatus } from "./status.js";
import { setUpVoice } from "./voice.js";

const $ = (id) => document.getElementById(id);
const PICKERS = { "model-select": "llm", "stt-model": "stt", "tts-model": "tts", "embedding-model": "embeddings" };
const PREFERRED = { "model-select": "gpt-4o-mini", "stt-model": "whisper-1", "tts-model": "tts-1",
  "embedding-model": "text-embedding-3-small", "voice-model": "gpt-realtime" };

function tabs() {
  const buttons = [...document.querySelectorAll('[role="tab"]')];
  const select = (button) => {
    for (const b of buttons) {
      const on = b === button;
      b.setAttribute("aria-selected", String(on));
      b.tabIndex = on ? 0 : -1;
      $(b.getAttribute("aria-controls")).hidden = !on;
    }
    if (button.id === "tab-status") refresh();
  };
  buttons.forEach((b, i) => {
    b.addEventListener("click", () => select(b));
    b.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (!step) return;
      const next = buttons[(i + step + buttons.length) % buttons.length];
      next.focus();
      select(next);
    });
  });
}

function fill(select, names, preferred) {
  select.replaceChildren(...names.map((n) => new Option(n, n)));
  if (names.includes(preferred)) select.value = preferred;
}

async function pickers() {
  try {
    const list = await models();
    for (const [id, type] of Object.entries(PICKERS)) {
      const names = list.filter((m) => m.type === type || m.type === "unknown").flatMap((m) => [m.id, ...(m.aliases ?? [])]);
      fill($(id), names, PREFERRED[id]);
    }
    const realtime = await fetchRealtimeNames();
    fill($("voice-model"), realtime, PREFERRED["voice-model"]);
    await loadVoices($("tts-model").value, $("tts-voice"));
    await loadVoices($("tts-model").value, $("voice-name"));
    showError(null);
  } catch (error) {
    showError(error);
  }
}

async function fetchRealtimeNames() {
  const body = await getJson("/v1/models");
  return body.data.map((m) => m.id).filter((id) => id.includes("realtime"));
}

function key() {
  const input = $("api-key");
  input.value = apiKey();
  input.addEventListener("change", () => {
    setApiKey(input.value.trim());
    pickers();
  });
}

tabs();
key();
setUpChat();
setUpVoice();
setUpAudio();
setUpEmbeddings();
setUpStatus();
pickers();
