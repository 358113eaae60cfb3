// Audio tools: a recording or an upload transcribed (segments on a timeline), text spoken in a chosen voice.

import { getJson, request, showError } from "./api.js";

const $ = (id) => document.getElementById(id);
let recorder = null;

function clock(seconds) {
  return `${Math.floor(seconds / 60)}:${(seconds % 60).toFixed(1).padStart(4, "0")}`;
}

async function transcribe(blob, name) {
  showError(null);
  $("stt-text").textContent = "Transcribing…";
  const form = new FormData();
  form.append("file", blob, name);
  form.append("model", $("stt-model").value);
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "segment");
  try {
    const body = await (await request("/v1/audio/transcriptions", { method: "POST", body: form })).json();
    $("stt-text").textContent = body.text;
    $("stt-timeline").replaceChildren(...(body.segments ?? []).map((s) => {
      const item = document.createElement("li");
      item.textContent = `${clock(s.start)} – ${clock(s.end)}  ${s.text.trim()}`;
      return item;
    }));
  } catch (error) {
    $("stt-text").textContent = "";
    showError(error);
  }
}

async function speak() {
  showError(null);
  const format = $("tts-format").value;
  try {
    const response = await request("/v1/audio/speech", { method: "POST", json: {
      model: $("tts-model").value, voice: $("tts-voice").value, input: $("tts-input").value,
      response_format: format, speed: Number($("tts-speed").value) } });
    const url = URL.createObjectURL(await response.blob());
    $("tts-audio").src = url;
    $("tts-audio").hidden = false;
    $("tts-download").href = url;
    $("tts-download").download = `speech.${format === "opus" ? "ogg" : format}`;
    $("tts-download").hidden = false;
    await $("tts-audio").play().catch(() => {});
  } catch (error) {
    showError(error);
  }
}

export async function loadVoices(model, select) {
  const body = await getJson(`/v1/audio/voices${model ? `?model=${encodeURIComponent(model)}` : ""}`);
  const voices = body.data.map((v) => v.id);
  select.replaceChildren(...[...new Set(voices)].map((v) => new Option(v, v)));
}

export function setUpAudio() {
  $("stt-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) transcribe(file, file.name);
    e.target.value = "";
  });
  $("stt-record").addEventListener("click", async () => {
    if (recorder) {
      recorder.stop();
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.ondataavailable = (e) => chunks.push(e.data);
      recorder.onstop = () => {
        stream.getTracks().forEach((t) => t.stop());
        recorder = null;
        $("stt-record").textContent = "Record";
        transcribe(new Blob(chunks, { type: chunks[0]?.type || "audio/webm" }), "recording.webm");
      };
      recorder.start();
      $("stt-record").textContent = "Stop recording";
    } catch (error) {
      showError(error);
    }
  });
  $("tts-speak").addEventListener("click", speak);
  $("tts-model").addEventListener("change", () => loadVoices($("tts-model").value, $("tts-voice")).catch(showError));
}
