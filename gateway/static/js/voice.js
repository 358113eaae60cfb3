// A voice conversation over the Realtime API's WebRTC calls: the microphone goes out as a track, the
// answer comes back as one, the events travel on the "oai-events" data channel. The page asks for a
// short-lived client secret first, so the call never carries the API key.

import { postJson, request, showError } from "./api.js";
import { snapshot } from "./media.js";

const $ = (id) => document.getElementById(id);
let call = null;

function line(role, text = "") {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  item.textContent = text;
  $("transcript").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function meter(stream) {
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const tick = () => {
    if (!call) return context.close();
    analyser.getFloatTimeDomainData(samples);
    $("level").value = Math.min(1, Math.sqrt(samples.reduce((s, x) => s + x * x, 0) / samples.length) * 4);
    requestAnimationFrame(tick);
  };
  tick();
}

class Call {
  constructor() {
    this.pc = new RTCPeerConnection();
    this.channel = this.pc.createDataChannel("oai-events");
    this.lines = {};
    this.stoppedAt = null;
    this.channel.onmessage = (m) => this.onEvent(JSON.parse(m.data));
    this.pc.ontrack = (e) => {
      $("voice-audio").srcObject = e.streams[0] ?? new MediaStream([e.track]);
    };
  }

  async start() {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true } });
    this.stream = stream;
    stream.getTracks().forEach((t) => this.pc.addTrack(t, stream));
    meter(stream);
    const session = {
      type: "realtime", model: $("voice-model").value, instructions: $("voice-instructions").value,
      audio: { input: { transcription: { model: "whisper-1" }, turn_detection: { type: "server_vad", silence_duration_ms: 300 } },
               output: { voice: $("voice-name").value || "alloy" } },
    };
    const secret = await postJson("/v1/realtime/client_secrets", { session });
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const answer = await request(`/v1/realtime/calls?model=${encodeURIComponent(session.model)}`, {
      method: "POST", body: this.pc.localDescription.sdp, headers: { "Content-Type": "application/sdp" },
      key: secret.value,
    });
    this.location = answer.headers.get("Location");
    await this.pc.setRemoteDescription({ type: "answer", sdp: await answer.text() });
  }

  send(event) {
    if (this.channel.readyState === "open") this.channel.send(JSON.stringify(event));
  }

  async onEvent(event) {
    switch (event.type) {
      case "session.created":
        $("voice-state").textContent = "listening";
        break;
      case "input_audio_buffer.speech_started":
        $("voice-state").textContent = "hearing you";
        this.lines[event.item_id] = this.lastUser = line("user", "…");
        if ($("voice-camera").checked) {
          try {
            const image = await snapshot();
            this.send({ type: "conversation.item.create", item: { type: "message", role: "user",
              content: [{ type: "input_image", image_url: image }] } });
          } catch (error) {
            showError(error);
          }
        }
        break;
      case "conversation.item.input_audio_transcription.delta":
        (this.lines[event.item_id] ??= line("user")).textContent =
          (this.lines[event.item_id].textContent.replace(/^…$/, "")) + event.delta;
        break;
      case "conversation.item.input_audio_transcription.completed":
        (this.lines[event.item_id] ??= line("user")).textContent = event.transcript;
        break;
      case "input_audio_buffer.speech_stopped":
        this.stoppedAt = performance.now();
        $("voice-state").textContent = "thinking";
        break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        (this.lines[event.item_id] ??= line("assistant")).textContent += event.delta;
        break;
      case "output_audio_buffer.started":
        $("voice-state").textContent = "speaking";
        if (this.stoppedAt !== null) {
          const ms = Math.round(performance.now() - this.stoppedAt);
          const latency = document.createElement("span");
          latency.className = "latency";
          latency.textContent = ` ${ms} ms to the first audio`;
          latency.title = "from the end of your speech to the first sound of the answer";
          this.lastUser?.append(latency);
          this.stoppedAt = null;
        }
        break;
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        $("voice-state").textContent = "listening";
        break;
      case "error":
        showError(new Error(event.error.message));
        break;
      default:
    }
  }

  async stop() {
    this.stream?.getTracks().forEach((t) => t.stop());
    this.pc.close();
  }
}

export function setUpVoice() {
  $("voice-start").addEventListener("click", async () => {
    showError(null);
    call = new Call();
    $("voice-start").disabled = true;
    $("voice-stop").disabled = false;
    $("voice-state").textContent = "connecting";
    try {
      await call.start();
    } catch (error) {
      showError(error);
      await call.stop();
      call = null;
      $("voice-start").disabled = false;
      $("voice-stop").disabled = true;
      $("voice-state").textContent = "idle";
    }
  });
  $("voice-stop").addEventListener("click", async () => {
    await call?.stop();
    call = null;
    $("voice-start").disabled = false;
    $("voice-stop").disabled = true;
    $("voice-state").textContent = "idle";
    $("level").value = 0;
  });
}
