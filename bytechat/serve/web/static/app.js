// bytechat page: sends the conversation to POST /chat/stream and shows the reply as it
// arrives. Plain browser JavaScript, no libraries: the page must work offline.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  history: [],        // [{role, content}] sent with every request
  controller: null,   // AbortController of the reply in flight
  conversation: 0,    // bumped by Reset, so a reply still finishing cannot write into the new one
  limits: { max_new_tokens: 1024, max_messages: 128, max_body_bytes: 262144 },
};

// ---------------------------------------------------------------- server-sent events

// Yields {event, data} for each event of a text/event-stream body (data parsed as JSON).
async function* readEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event) yield event;
    }
  }
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue; // comment / keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: JSON.parse(data.join("\n")) } : null;
}

// ---------------------------------------------------------------- conversation view

function addMessage(role, text) {
  $("empty").hidden = true;
  const message = document.createElement("div");
  message.className = `message ${role}`;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text; // never innerHTML: replies are untrusted text
  bubble.append(body);
  message.append(bubble);
  $("log").append(message);
  scrollToEnd();
  return message;
}

function showTyping(message) {
  const dots = document.createElement("span");
  dots.className = "typing";
  dots.setAttribute("aria-label", "writing");
  dots.append(document.createElement("span"), document.createElement("span"), document.createElement("span"));
  message.querySelector(".bubble").prepend(dots);
}

// Pieces can arrive thousands of times a second; drawing each one (layout, scrolling)
// would swamp the page, so they are collected and drawn once per animation frame.
function textSink(message) {
  const node = document.createTextNode("");
  message.querySelector(".text").append(node);
  let pending = "";
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (!pending) return;
    message.querySelector(".typing")?.remove();
    const nearEnd = isNearEnd();
    node.appendData(pending);
    pending = "";
    if (nearEnd) scrollToEnd();
  };
  const add = (text) => {
    pending += text;
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(flush);
    }
  };
  return { add, flush };
}

function setMeta(message, text, stopped = false) {
  message.querySelector(".typing")?.remove();
  const meta = document.createElement("div");
  meta.className = stopped ? "meta stopped" : "meta";
  meta.textContent = text;
  const nearEnd = isNearEnd();
  message.append(meta);
  if (nearEnd) scrollToEnd();
}

// Source chips under a reply: one per page the server put notes of in the prompt; each
// opens (a <details>) to show the blocks' text and, where the notes format has one, a link
// that opens the block in the notes app. Untrusted text: textContent only; links only of
// the schemes the server makes (bytechat/notes/links.py).
const NOTE_LINK = /^(https:\/\/roamresearch\.com\/|logseq:\/\/graph\/|obsidian:\/\/open\?)/;

function showSources(message, sources) {
  if (!Array.isArray(sources) || sources.length === 0) return;
  const box = document.createElement("div");
  box.className = "sources";
  const label = document.createElement("span");
  label.className = "sources-label";
  label.textContent = "Sources";
  box.append(label);
  const pages = new Map();
  for (const source of sources) {
    if (!pages.has(source.page)) pages.set(source.page, []);
    pages.get(source.page).push(source);
  }
  for (const [name, blocks] of pages) {
    const chip = document.createElement("details");
    chip.className = "source";
    const summary = document.createElement("summary");
    summary.textContent = name;
    summary.title = `${name} (${blocks.length} block${blocks.length === 1 ? "" : "s"}, best score ${Number(blocks[0].score).toFixed(2)})`;
    chip.append(summary);
    for (const block of blocks) {
      const text = document.createElement("p");
      text.className = "source-text";
      text.textContent = block.text;
      chip.append(text);
      if (typeof block.link === "string" && NOTE_LINK.test(block.link)) {
        const open = document.createElement("a");
        open.className = "source-link";
        open.href = block.link;
        open.textContent = "open in your notes";
        open.rel = "noopener noreferrer";
        open.target = "_blank";
        chip.append(open);
      }
    }
    box.append(chip);
  }
  const nearEnd = isNearEnd();
  message.append(box);
  if (nearEnd) scrollToEnd();
}

function showError(text) {
  const message = addMessage("error", text);
  message.setAttribute("role", "alert");
  return message;
}

function isNearEnd() {
  const log = $("log");
  return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
}

function scrollToEnd() {
  const log = $("log");
  log.scrollTop = log.scrollHeight;
}

function describeDone(done) {
  const reasons = { stop: "done", length: "length limit", timeout: "timed out", cancelled: "stopped" };
  const parts = [reasons[done.finish_reason] || done.finish_reason, `${done.n_bytes} bytes`, `${done.seconds.toFixed(2)} s`];
  if (done.bytes_per_s) parts.push(`${Math.round(done.bytes_per_s)} B/s`);
  return parts.join(" · ");
}

// ---------------------------------------------------------------- requests

function numberOrNull(input) {
  const value = input.value.trim();
  return value === "" ? null : Number(value);
}

function buildRequest(messages) {
  const system = $("system-prompt").value.trim();
  const all = system ? [{ role: "system", content: system }, ...messages] : messages;
  const request = {
    messages: fitToLimits(all),
    temperature: Number($("temperature").value),
    top_k: numberOrNull($("top-k")),
    notes: $("use-notes").checked,
  };
  const maxNew = numberOrNull($("max-new-tokens"));
  if (maxNew !== null) request.max_new_tokens = maxNew;
  return request;
}

// Drops the oldest turns (never the system prompt or the new message) to stay within the
// server's limits; the model only sees the last block_size bytes anyway.
function fitToLimits(messages) {
  const keepFirst = messages[0]?.role === "system" ? 1 : 0;
  const out = messages.slice();
  const tooBig = () =>
    out.length > state.limits.max_messages ||
    new TextEncoder().encode(JSON.stringify(out)).length > state.limits.max_body_bytes - 1024;
  while (out.length > keepFirst + 1 && tooBig()) out.splice(keepFirst, 1);
  return out;
}

async function errorDetail(response) {
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") return `${response.status}: ${body.detail}`;
  } catch (_) { /* not JSON: fall through */ }
  return `${response.status} ${response.statusText || "error"}`;
}

// ---------------------------------------------------------------- sending

// A full server answers 503 with Retry-After (seconds until a slot is likely): the reply
// says "busy, retrying in N s", counts down, and the request is sent once more. A second
// 503 is shown as an error like any other refusal.
const MAX_RETRY_WAIT_S = 120;

async function postReply(body, signal, reply) {
  const post = () =>
    fetch("/chat/stream", { method: "POST", headers: { "Content-Type": "application/json" }, body, signal });
  const response = await post();
  if (response.status !== 503) return response;
  await waitToRetry(reply, retryAfterSeconds(response), signal);
  return post();
}

function retryAfterSeconds(response) {
  const seconds = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return Number.isFinite(seconds) && seconds >= 0 ? Math.min(seconds, MAX_RETRY_WAIT_S) : 1;
}

async function waitToRetry(message, seconds, signal) {
  const note = document.createElement("div");
  note.className = "meta busy";
  note.setAttribute("role", "status");
  message.append(note);
  try {
    for (let left = seconds; left > 0; left -= 1) {
      note.textContent = `busy, retrying in ${left} s`;
      await sleep(1000, signal);
    }
  } finally {
    note.remove();
  }
}

// Resolves after ms, or rejects with an AbortError when Stop is pressed first.
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const aborted = () => reject(new DOMException("stopped while waiting", "AbortError"));
    if (signal.aborted) return aborted();
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); aborted(); }, { once: true });
  });
}

async function send(text) {
  const userTurn = { role: "user", content: text };
  const conversation = state.conversation;
  const userMessage = addMessage("user", text);
  const reply = addMessage("assistant", "");
  reply.classList.add("streaming");
  showTyping(reply);
  const sink = textSink(reply);
  const controller = new AbortController();
  setBusy(controller);

  let replyText = "";
  let accepted = false; // did the server take the request?
  try {
    const body = JSON.stringify(buildRequest([...state.history, userTurn]));
    const response = await postReply(body, controller.signal, reply);
    if (!response.ok) throw new Error(await errorDetail(response));
    accepted = true;
    let done = null;
    for await (const { event, data } of readEvents(response.body)) {
      if (event === "message") {
        replyText += data.text;
        sink.add(data.text);
      } else if (event === "sources") {
        showSources(reply, data.sources);
      } else if (event === "done") {
        done = data;
      } else if (event === "error") {
        throw new Error(data.detail || "generation failed");
      }
    }
    if (!done) throw new Error("the connection closed before the reply was complete");
    sink.flush();
    if (done.abstained) reply.querySelector(".sources")?.remove(); // "not in your notes" cites none
    setMeta(reply, describeDone(done), done.finish_reason !== "stop" && done.finish_reason !== "length");
  } catch (err) {
    sink.flush();
    if (err.name === "AbortError") {
      setMeta(reply, "stopped", true);
    } else {
      if (!replyText) reply.remove();
      showError(err.message || String(err));
    }
  } finally {
    reply.classList.remove("streaming");
    setBusy(null);
  }

  if (conversation !== state.conversation) return;
  if (accepted || replyText) {
    state.history.push(userTurn);
    // The server refuses blank messages, and a blank reply adds nothing to the context.
    if (replyText.trim()) state.history.push({ role: "assistant", content: replyText });
  } else {
    // Never reached the model: let the person fix and resend it.
    userMessage.classList.add("unsent");
    if (!$("input").value) $("input").value = text;
    if (!replyText) reply.remove();
  }
}

function setBusy(controller) {
  state.controller = controller;
  $("send").hidden = controller !== null;
  $("stop").hidden = controller === null;
  if (controller === null) $("input").focus();
}

function submit() {
  const input = $("input");
  const text = input.value;
  if (!text.trim() || state.controller) return;
  input.value = "";
  autosize();
  send(text);
}

function reset() {
  state.controller?.abort();
  state.conversation += 1;
  state.history = [];
  for (const message of document.querySelectorAll("#log .message")) message.remove();
  $("empty").hidden = false;
  $("input").focus();
}

function autosize() {
  const input = $("input");
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight}px`;
}

// ---------------------------------------------------------------- start-up

async function loadHealth() {
  const info = $("model-info");
  try {
    const response = await fetch("/health");
    if (!response.ok) throw new Error(await errorDetail(response));
    const health = await response.json();
    state.limits = { ...state.limits, ...health.limits };
    info.textContent = describeModel(health);
    info.classList.remove("offline");
    const maxNew = $("max-new-tokens");
    maxNew.max = health.limits.max_new_tokens;
    maxNew.value = health.limits.default_max_new_tokens;
    showNotesStatus(health.notes);
  } catch (err) {
    info.textContent = `server unreachable (${err.message})`;
    info.classList.add("offline");
  }
}

function showNotesStatus(notes) {
  const loaded = Boolean(notes && notes.loaded);
  $("use-notes").disabled = !loaded;
  if (!loaded) $("use-notes").checked = false;
  $("notes-status").textContent = loaded ? `(${notes.blocks} note blocks)` : "(no notes index on the server)";
}

function describeModel(health) {
  const model = health.model || {};
  const parts = [];
  const name = model.name || model.profile;
  if (name) parts.push(name);
  if (model.step !== undefined && model.step !== null) parts.push(`step ${model.step}`);
  if (model.params) parts.push(`${formatCount(model.params)} params`);
  parts.push(`context ${health.block_size} bytes`);
  return parts.join(" · ");
}

function formatCount(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${Math.round(n / 1e3)}k`;
  return String(n);
}

function init() {
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  $("input").addEventListener("input", autosize);
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("reset").addEventListener("click", reset);
  $("settings-toggle").addEventListener("click", () => {
    const open = $("settings").hidden;
    $("settings").hidden = !open;
    $("settings-toggle").setAttribute("aria-expanded", String(open));
  });
  const temperature = $("temperature");
  const showTemperature = () => { $("temperature-value").textContent = Number(temperature.value).toFixed(2); };
  temperature.addEventListener("input", showTemperature);
  showTemperature();
  loadHealth();
}

document.addEventListener("DOMContentLoaded", init);
