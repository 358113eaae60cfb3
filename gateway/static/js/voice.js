// A voice conversation over the Realtime API: a WebRTC call where the browser has WebRTC (the microphone
// goes out as a track, the answer comes back as one, the events travel on the "oai-events" data channel),
// else its WebSocket (24 kHz pcm in base64 events both ways, played here, truncated here on barge-in).
// Either way the page asks for a short-lived client secret first: the key never travels with the call.

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

function sessionSettings() {
  return {
    type: "realtime", model: $("voice-model").value, instructions: $("voice-instructions").value,
    audio: { input: { transcription: { model: "whisper-1" }, turn_detection: { type: "server_vad", silence_duration_ms: 300 } },
             output: { voice: $("voice-name").value || "alloy" } },
  };
}

class Conversation {
  constructor() {
    this.lines = {};
    this.stoppedAt = null;
  }

  async open() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true } });
    meter(this.stream);
    const session = sessionSettings();
    this.secret = (await postJson("/v1/realtime/client_secrets", { session })).value;
    return session;
  }

  /** The camera's frame now, as an image item of the turn being spoken (shown once the server has it). */
  async showFrame() {
    try {
      const image = await snapshot();
      const id = `item_frame${Date.now()}`;
      (this.frames ??= new Map()).set(id, image);
      this.send({ type: "conversation.item.create", item: { id, type: "message", role: "user",
        content: [{ type: "input_image", image_url: image }] } });
    } catch (error) {
      showError(error);
    }
  }

  heardAnswer() {
    if (this.stoppedAt === null) return;
    const latency = document.createElement("span");
    latency.className = "latency";
    latency.textContent = ` ${Math.round(performance.now() - this.stoppedAt)} ms to the first audio`;
    latency.title = "from the end of your speech to the first sound of the answer";
    this.lastUser?.append(latency);
    this.stoppedAt = null;
  }

  async onEvent(event) {
    switch (event.type) {
      case "session.created":
        $("voice-state").textContent = "listening";
        break;
      case "input_audio_buffer.speech_started":
        this.interrupted?.();
        $("voice-state").textContent = "hearing you";
        this.lines[event.item_id] = this.lastUser = line("user", "…");
        if ($("voice-camera").checked) this.showFrame();
        break;
      case "conversation.item.added":
        if (this.frames?.has(event.item.id)) {
          const img = document.createElement("img");
          img.src = this.frames.get(event.item.id);
          img.alt = "the camera frame sent with this turn";
          line("user frame").append(img);
          this.frames.delete(event.item.id);
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
        this.heardAnswer();
        break;
      case "response.output_audio.delta":
        this.play?.(event);
        break;
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        $("voice-state").textContent = "listening";
        break;
      case "response.done":
        if (event.response.status === "cancelled") {
          for (const item of event.response.output ?? []) this.lines[item.id]?.classList.add("interrupted");
        }
        break;
      case "error":
        showError(new Error(event.error.message));
        break;
      default:
    }
  }

  async stop() {
    this.stream?.getTracks().forEach((t) => t.stop());
  }
}

class RtcCall extends Conversation {
  async start() {
    const session = await this.open();
    this.pc = new RTCPeerConnection();
    this.channel = this.pc.createDataChannel("oai-events");
    this.channel.onmessage = (m) => this.onEvent(JSON.parse(m.data));
    this.pc.ontrack = (e) => {
      $("voice-audio").srcObject = e.streams[0] ?? new MediaStream([e.track]);
    };
    this.stream.getTracks().forEach((t) => this.pc.addTrack(t, this.stream));
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const answer = await request(`/v1/realtime/calls?model=${encodeURIComponent(session.model)}`, {
      method: "POST", body: this.pc.localDescription.sdp, headers: { "Content-Type": "application/sdp" },
      key: this.secret,
    });
    await this.pc.setRemoteDescription({ type: "answer", sdp: await answer.text() });
  }

  send(event) {
    if (this.channel?.readyState === "open") this.channel.send(JSON.stringify(event));
  }

  async stop() {
    await super.stop();
    this.pc?.close();
  }
}

const RATE = 24000;

function base64(buffer) {
  let text = "";
  const bytes = new Uint8Array(buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

class SocketCall extends Conversation {
  async start() {
    const session = await this.open();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.socket = new WebSocket(`${scheme}://${location.host}/v1/realtime?model=${encodeURIComponent(session.model)}`,
      ["realtime", `openai-insecure-api-key.${this.secret}`]);
    this.socket.onmessage = (m) => this.onEvent(JSON.parse(m.data));
    await new Promise((resolve, reject) => {
      this.socket.onopen = resolve;
      this.socket.onerror = () => reject(new Error("The realtime WebSocket could not be opened."));
    });
    this.context = new AudioContext({ sampleRate: RATE });
    await this.context.audioWorklet.addModule("/static/js/pcm-worklet.js");
    const capture = new AudioWorkletNode(this.context, "pcm");
    capture.port.onmessage = (m) => this.send({ type: "input_audio_buffer.append", audio: base64(m.data) });
    this.context.createMediaStreamSource(this.stream).connect(capture);
    this.playing = [];
    this.playhead = 0;
    this.item = null;
  }

  send(event) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(event));
  }

  /** An answer's audio, queued to play after what is playing. */
  play(event) {
    const bytes = Uint8Array.from(atob(event.delta), (c) => c.charCodeAt(0));
    const samples = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
    const buffer = this.context.createBuffer(1, samples.length, RATE);
    buffer.getChannelData(0).set(Float32Array.from(samples, (s) => s / 0x8000));
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const now = this.context.currentTime;
    if (this.item?.id !== event.item_id) this.item = { id: event.item_id, start: Math.max(now, this.playhead), ms: 0 };
    this.playhead = Math.max(now, this.playhead);
    source.start(this.playhead);
    this.playhead += buffer.duration;
    this.item.ms += buffer.duration * 1000;
    this.playing.push(source);
    source.onended = () => this.playing.splice(this.playing.indexOf(source), 1);
    const line = this.lines[event.item_id];
    if (line) line.dataset.audioMs = String(Math.round(this.item.ms));
    if (this.playing.length === 1) {
      $("voice-state").textContent = "speaking";
      this.heardAnswer();
    }
  }

  /** The user spoke over the answer: stop it, and tell the server how much of it was heard. */
  interrupted() {
    if (!this.playing.length || !this.item) return;
    const played = Math.max(0, Math.min(this.item.ms, (this.context.currentTime - this.item.start) * 1000));
    this.playing.forEach((s) => s.stop());
    this.playing = [];
    this.playhead = 0;
    this.send({ type: "conversation.item.truncate", item_id: this.item.id, content_index: 0,
      audio_end_ms: Math.floor(played) });
    const answer = this.lines[this.item.id];
    if (answer) {
      answer.classList.add("interrupted");
      answer.dataset.heardMs = String(Math.floor(played));
    }
    this.item = null;
  }

  async stop() {
    await super.stop();
    this.socket?.close();
    await this.context?.close();
  }
}

export function setUpVoice() {
  $("voice-start").addEventListener("click", async () => {
    showError(null);
    const transport = $("voice-transport").value;
    call = transport === "websocket" || (transport === "auto" && !window.RTCPeerConnection) ? new SocketCall() : new RtcCall();
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
