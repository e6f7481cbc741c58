// voxray web page: audio slots (upload or microphone), the four actions and their displays.
// Talks to the public HTTP API only (same origin), with the API key from the header field sent
// as `Authorization: Bearer <key>`. Recordings are encoded to 16-bit PCM WAV here, so the
// service decodes them like any uploaded file.
"use strict";

const KEY_STORAGE = "voxray.apiKey";
const MAX_RECORD_SECONDS = 60; // a recording stops by itself after this long
const slots = {}; // slot name -> {blob, name, seconds, node}

// ---------------------------------------------------------------------------------------------
// API

function apiKey() {
  return document.getElementById("api-key").value.trim();
}

// POST (or GET) `path` with a FormData or JSON body -> the parsed JSON answer; an error answer
// ({"error": {"code", "message"}}) or a network failure throws an Error the page can show.
async function api(path, { form, json, method } = {}) {
  const headers = {};
  const key = apiKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  let body;
  if (form) body = form;
  else if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const verb = method || (body ? "POST" : "GET");
  let response;
  try {
    response = await fetch(path, { method: verb, headers, body });
  } catch (err) {
    throw new ApiError(`${verb} ${path}`, "network_error", `the service did not answer: ${err.message}`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(
      `${verb} ${path}: ${response.status}`,
      e.code || "http_error",
      e.message || text.slice(0, 300) || response.statusText,
    );
  }
  return data;
}

class ApiError extends Error {
  constructor(where, code, message) {
    super(message);
    this.where = where;
    this.code = code;
  }
}

function showError(err) {
  const box = document.getElementById("error");
  const title = err instanceof ApiError ? `${err.where} (${err.code})` : "Error";
  document.getElementById("error-title").textContent = title;
  document.getElementById("error-message").textContent = err.message;
  box.hidden = false;
}

function clearError() {
  document.getElementById("error").hidden = true;
}

// Runs `fn` for a button: disables it meanwhile, shows any error, never throws.
async function run(button, fn) {
  clearError();
  button.disabled = true;
  const label = button.textContent;
  button.textContent = label + "…";
  try {
    await fn();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

// ---------------------------------------------------------------------------------------------
// Audio slots: a file upload or a microphone recording, kept as a Blob

function setSlotAudio(name, blob, label, seconds) {
  const slot = slots[name];
  slot.blob = blob;
  slot.name = label;
  const status = slot.node.querySelector(".slot-status");
  status.textContent = seconds ? `${label}, ${seconds.toFixed(1)} s` : label;
  status.classList.remove("muted");
  const player = slot.node.querySelector("audio");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(blob);
  player.hidden = false;
}

function slotFile(name, field) {
  const slot = slots[name];
  if (!slot.blob) {
    throw new ApiError(slot.node.dataset.label, "no_audio", "record or choose an audio file first");
  }
  return [field, slot.blob, slot.name];
}

function initSlot(node) {
  const name = node.dataset.slot;
  node.append(document.getElementById("slot-template").content.cloneNode(true));
  node.querySelector(".slot-label").textContent = node.dataset.label;
  slots[name] = { blob: null, name: "", node };
  const input = node.querySelector("input[type=file]");
  input.addEventListener("change", () => {
    const file = input.files[0];
    if (file) setSlotAudio(name, file, file.name, 0);
  });
  const button = node.querySelector("button.record");
  button.addEventListener("click", () => toggleRecording(name, button).catch(showError));
}

// 16-bit PCM mono WAV of Float32 `samples` at `rate`.
function encodeWav(samples, rate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true); // byte rate
  view.setUint16(32, 2, true); // block align
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const x = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, x < 0 ? x * 0x8000 : x * 0x7fff, true);
  }
  return new Blob([buffer], { type: "audio/wav" });
}

let recording = null; // {name, button, stream, context, chunks, timer}

async function toggleRecording(name, button) {
  if (recording) {
    const was = recording.name;
    await stopRecording();
    if (was === name) return;
  }
  if (!navigator.mediaDevices || !window.AudioWorkletNode) {
    throw new ApiError("microphone", "unsupported", "this browser cannot record here (needs https or localhost)");
  }
  clearError();
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const context = new AudioContext();
  await context.audioWorklet.addModule("recorder.js");
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "pcm-capture");
  const chunks = [];
  node.port.onmessage = (e) => chunks.push(e.data);
  const mute = context.createGain();
  mute.gain.value = 0; // keeps the graph pulled without playing the microphone back
  source.connect(node).connect(mute).connect(context.destination);
  const timer = setTimeout(() => stopRecording().catch(showError), MAX_RECORD_SECONDS * 1000);
  recording = { name, button, stream, context, chunks, timer };
  button.textContent = "■ Stop";
  button.classList.add("active");
  slots[name].node.querySelector(".slot-status").textContent = "recording…";
}

async function stopRecording() {
  const r = recording;
  recording = null;
  clearTimeout(r.timer);
  r.stream.getTracks().forEach((t) => t.stop());
  const rate = r.context.sampleRate;
  await r.context.close();
  r.button.textContent = "● Record";
  r.button.classList.remove("active");
  const length = r.chunks.reduce((n, c) => n + c.length, 0);
  const samples = new Float32Array(length);
  let offset = 0;
  for (const c of r.chunks) {
    samples.set(c, offset);
    offset += c.length;
  }
  if (!length) throw new ApiError("microphone", "empty_recording", "nothing was recorded");
  setSlotAudio(r.name, encodeWav(samples, rate), "recording.wav", length / rate);
}

// ---------------------------------------------------------------------------------------------
// Actions

function formOf(...entries) {
  const form = new FormData();
  for (const [field, value, filename] of entries) {
    if (value === undefined || value === null || value === "") continue;
    if (value instanceof Blob) form.append(field, value, filename || "audio.wav");
    else form.append(field, value);
  }
  return form;
}

function value(id) {
  return document.getElementById(id).value.trim();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

async function verify() {
  const out = await api("/verify", {
    form: formOf(slotFile("verify-a", "audio_a"), slotFile("verify-b", "audio_b")),
  });
  const box = document.getElementById("verify-result");
  box.replaceChildren(
    el("div", { class: "score" }, out.score.toFixed(3)),
    el("div", { class: "decision " + (out.same ? "same" : "different") },
      out.same ? "same speaker" : "different speakers"),
    el("div", { class: "muted" }, `threshold ${out.threshold.toFixed(3)} · ${out.model_id}`),
  );
}

async function enroll() {
  const name = value("enroll-name");
  if (!name) throw new ApiError("Enroll", "no_name", "give the speaker a name");
  const group = value("enroll-group") || "default";
  const out = await api("/speakers", {
    form: formOf(["name", name], ["groups", group], slotFile("enroll", "audio")),
  });
  document.getElementById("enroll-result").replaceChildren(
    el("div", { class: "enrolled" }, `Enrolled ${out.name} in ${out.groups.join(", ")}`),
    el("div", { class: "muted" }, `id ${out.id} · ${out.num_embeddings} clip(s)`),
  );
  await refreshStatus();
}

async function identify() {
  const group = value("identify-group");
  const out = await api("/identify", {
    form: formOf(slotFile("identify", "audio"), ["group", group], ["top_k", value("identify-topk")]),
  });
  const best = Math.max(...out.matches.map((m) => m.score), 0.001);
  const rows = out.matches.map((m, i) =>
    el("tr", { class: m.speaker_id ? "match" : "match unknown" },
      el("td", {}, String(i + 1)),
      el("td", { class: "match-name" }, m.name),
      el("td", {}, m.score.toFixed(3)),
      el("td", {}, el("div", { class: "bar", style: `width:${Math.max(0, (100 * m.score) / best).toFixed(0)}%` })),
    ));
  document.getElementById("identify-result").replaceChildren(
    el("table", { class: "ranking" },
      el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "speaker"), el("th", {}, "score"), el("th", {}, ""))),
      el("tbody", {}, ...rows)),
    el("div", { class: "muted" }, `group ${out.group || "all"} · threshold ${out.threshold.toFixed(3)}`),
  );
}

async function diarize() {
  const out = await api("/diarize", {
    form: formOf(slotFile("diarize", "audio"), ["num_speakers", value("diarize-num")],
      ["group", value("diarize-group")]),
  });
  const box = document.getElementById("diarize-result");
  box.replaceChildren(
    timeline(out),
    el("div", { class: "muted" },
      `${out.num_speakers} speaker(s) · ${out.segments.length} segments · ${out.duration.toFixed(1)} s · ` +
      `${out.timings.total.toFixed(2)} s to compute`),
  );
}

// ---------------------------------------------------------------------------------------------
// Diarization timeline: one lane per speaker, segments as bars, a time axis in seconds (SVG)

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#3b6fd8", "#e07b39", "#3aa676", "#c2449b", "#8a6bd1", "#c9a227", "#4fb3c9", "#d04a4a"];

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function tickStep(duration) {
  for (const step of [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800]) {
    if (duration / step <= 12) return step;
  }
  return 3600;
}

function timeline(out) {
  const lanes = out.speakers;
  const left = 130, right = 20, top = 10, lane = 28, width = 900;
  const height = top + lanes.length * lane + 40;
  const duration = Math.max(out.duration, 0.1);
  const x = (t) => left + ((width - left - right) * t) / duration;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "timeline", role: "img",
    "aria-label": "diarization timeline" });
  lanes.forEach((spk, i) => {
    const y = top + i * lane;
    root.append(svg("rect", { x: left, y, width: width - left - right, height: lane - 6, class: "lane" }));
    const label = out.named && out.named[spk] ? `${out.named[spk]} (${spk})` : spk;
    root.append(svg("text", { x: left - 8, y: y + lane / 2, class: "lane-label" }, label));
  });
  for (const seg of out.segments) {
    const i = lanes.indexOf(seg.speaker);
    const bar = svg("rect", {
      x: x(seg.start), y: top + i * lane, height: lane - 6,
      width: Math.max(1, x(seg.end) - x(seg.start)), fill: COLORS[i % COLORS.length], class: "segment",
    });
    bar.append(svg("title", {}, `${seg.speaker}: ${seg.start.toFixed(2)}–${seg.end.toFixed(2)} s`));
    root.append(bar);
  }
  const axisY = top + lanes.length * lane + 2;
  root.append(svg("line", { x1: left, x2: width - right, y1: axisY, y2: axisY, class: "axis" }));
  const step = tickStep(duration);
  for (let t = 0; t <= duration + 1e-9; t += step) {
    root.append(svg("line", { x1: x(t), x2: x(t), y1: axisY, y2: axisY + 5, class: "axis" }));
    root.append(svg("text", { x: x(t), y: axisY + 18, class: "tick" }, Number(t.toFixed(1)).toString()));
  }
  root.append(svg("text", { x: (left + width - right) / 2, y: axisY + 34, class: "axis-title" }, "time (s)"));
  return root;
}

// ---------------------------------------------------------------------------------------------
// Status: health line and the groups for the group fields

async function refreshStatus() {
  const health = document.getElementById("health");
  try {
    const h = await api("/health");
    health.textContent = `${h.model_id} · ${h.num_speakers} enrolled · threshold ${h.threshold.toFixed(2)}`;
    const g = await api("/groups");
    document.getElementById("group-list").replaceChildren(
      ...g.groups.map((x) => el("option", { value: x.name }, `${x.num_speakers} speaker(s)`)));
  } catch (err) {
    health.textContent = `not connected (${err.code})`;
    if (err.code === "unauthorized" || err.where.endsWith(": 401") || err.where.endsWith(": 403")) {
      showError(err);
    }
  }
}

function init() {
  const key = document.getElementById("api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORAGE, key.value.trim());
    refreshStatus();
  });
  document.getElementById("error-close").addEventListener("click", clearError);
  document.querySelectorAll(".slot").forEach(initSlot);
  const actions = { verify, enroll, identify, diarize };
  for (const [id, fn] of Object.entries(actions)) {
    const button = document.getElementById(`${id}-run`);
    button.addEventListener("click", () => run(button, fn));
  }
  refreshStatus();
}

init();
