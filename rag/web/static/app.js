// The employees' page of loopline: sign in with an API key, ask, read the streamed answer and
// its sources, rate it; admins also upload and watch runs, dead letters and alerts.
// Every string from the service is put in the page with textContent or text nodes, never as
// HTML: documents are data, not markup. The key lives in sessionStorage only (never a URL).
"use strict";

const KEY_STORE = "loopline.apiKey";
const MAX_ERROR_CHARS = 300;

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const state = { question: "", answer: null, rating: 0, stream: null, opener: null, citations: [] };

// --- small DOM helpers: elements built from text only ------------------------------------
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

function say(node, text, kind) {
  node.textContent = text || "";
  node.classList.toggle("loading", kind === "loading");
  if (node.getAttribute("role") === "alert") show(node, Boolean(text));
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function duration(seconds) {
  return ago(seconds).replace(" ago", "");
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

// --- the API ------------------------------------------------------------------------------
function key() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

async function errorText(response) {
  let text = `The service answered ${response.status}.`;
  try {
    const body = await response.json();
    if (typeof body.detail === "string") text = body.detail;
    else if (Array.isArray(body.detail)) text = body.detail.map((e) => e.msg || "").join("; ");
  } catch {
    // not JSON (a proxy's page, say): the status says enough
  }
  return text.length > MAX_ERROR_CHARS ? `${text.slice(0, MAX_ERROR_CHARS)}…` : text;
}

// fetch with the key; a 401 anywhere ends the session and returns to sign-in.
async function call(path, { method = "GET", json, form, signal, accept } = {}) {
  const headers = { "X-API-Key": key() };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  if (accept) headers.Accept = accept;
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal, cache: "no-store", credentials: "omit" });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "The service cannot be reached. Check your connection and try again.");
  }
  if (response.status === 401) {
    signOut("Your key was refused (it may have been revoked). Sign in again.");
    throw new ApiError(401, "signed out");
  }
  return response;
}

async function getJson(path) {
  const response = await call(path);
  if (!response.ok) throw new ApiError(response.status, await errorText(response));
  return response.json();
}

function report(node, exc) {
  if (exc instanceof ApiError && exc.status === 401) return; // already back at sign-in
  say(node, exc instanceof ApiError ? exc.message : "Something went wrong in the page. Reload it and try again.");
  if (!(exc instanceof ApiError)) console.error(exc);
}

// --- signing in and out ---------------------------------------------------------------------
async function signIn(event) {
  event.preventDefault();
  const input = $("key");
  const candidate = input.value.trim();
  if (!candidate) return;
  const button = $("signin-button");
  button.disabled = true;
  say($("signin-error"), "");
  try {
    let response;
    try {
      response = await fetch("/v1/sources", { headers: { "X-API-Key": candidate }, cache: "no-store" });
    } catch {
      throw new ApiError(0, "The service cannot be reached. Check your connection and try again.");
    }
    if (response.status === 401) throw new ApiError(401, "This key is not known. Check it and try again.");
    sessionStorage.setItem(KEY_STORE, candidate);
    input.value = "";
    await enter();
  } catch (exc) {
    say($("signin-error"), exc instanceof ApiError ? exc.message : "Signing in failed. Try again.");
    input.focus();
    input.select(); // typing replaces the refused key
  } finally {
    button.disabled = false;
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  if (state.stream) state.stream.abort();
  clearWorkspace();
  show($("workspace"), false);
  show($("admin"), false);
  show($("sign-out"), false);
  show($("who"), false);
  show($("signin"), true);
  say($("signin-error"), message || "");
  $("key").focus();
}

function clearWorkspace() {
  for (const id of ["citations", "sources", "runs", "dead", "alerts", "answer", "passage-text"]) {
    $(id).replaceChildren();
  }
  for (const id of ["answer-status", "sources-status", "runs-status", "dead-status", "alerts-status", "upload-status"]) {
    say($(id), "");
  }
  show($("result"), false);
  $("question").value = "";
  Object.assign(state, { question: "", answer: null, rating: 0, stream: null, opener: null, citations: [] });
}

async function enter() {
  show($("signin"), false);
  show($("workspace"), true);
  show($("sign-out"), true);
  $("question").focus();
  await Promise.all([loadSources(), detectAdmin()]);
}

// Who is an admin: `GET /v1/me` where the service has it; else probe an admin-only route.
async function detectAdmin() {
  let admin = false;
  try {
    const me = await call("/v1/me");
    if (me.ok) {
      const body = await me.json();
      admin = Boolean(body.admin);
      const who = $("who");
      who.textContent = body.name ? `Signed in as ${body.name}` : "Signed in";
      show(who, true);
    } else {
      const probe = await call("/v1/runs?limit=1");
      admin = probe.ok;
    }
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 401) return;
    admin = false;
  }
  show($("admin"), admin);
  if (admin) await loadAdmin();
}

// --- asking -------------------------------------------------------------------------------
function resetAnswer() {
  $("answer").replaceChildren();
  $("citations").replaceChildren();
  show($("citations-title"), false);
  show($("abstained"), false);
  say($("answer-error"), "");
  closePassage(false);
  const feedback = $("feedback-form");
  show(feedback, false);
  feedback.querySelector("fieldset").disabled = false;
  $("comment").value = "";
  say($("feedback-status"), "");
  setRating(0);
  state.answer = null;
  state.citations = [];
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  if (state.stream) state.stream.abort();
  const stream = new AbortController();
  state.stream = stream;
  state.question = question;
  resetAnswer();
  show($("result"), true);
  const status = $("answer-status");
  say(status, "Searching your documents…", "loading");
  $("ask-button").disabled = true;
  let text = "";
  let finished = false;
  try {
    const response = await call("/v1/query/stream", {
      method: "POST",
      json: { question },
      signal: stream.signal,
      accept: "text/event-stream",
    });
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    for await (const [name, data] of serverEvents(response.body, stream.signal)) {
      if (name === "citations") {
        state.citations = data.citations || [];
        renderCitations(state.citations);
        say(status, "Writing the answer…", "loading");
      } else if (name === "token") {
        text += data.text || "";
        $("answer").textContent = text;
      } else if (name === "done") {
        finished = true;
        renderAnswer(data.answer);
      } else if (name === "error") {
        throw new ApiError(500, `The answer failed: ${data.detail || "unknown error"}`);
      }
    }
    if (!finished) throw new ApiError(0, "The answer stopped before it was complete. Ask again.");
  } catch (exc) {
    if (exc.name === "AbortError") return;
    say(status, "");
    report($("answer-error"), exc);
  } finally {
    if (state.stream === stream) state.stream = null;
    if (!state.stream) $("ask-button").disabled = false; // not while a newer question streams
  }
}

// Server-sent events from a fetch body (EventSource cannot send the key header).
async function* serverEvents(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut = buffer.indexOf("\n\n");
      while (cut >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = parseEvent(block);
        if (event) yield event;
        cut = buffer.indexOf("\n\n");
      }
      if (signal.aborted) return;
    }
    const last = parseEvent(buffer);
    if (last) yield last;
  } finally {
    reader.releaseLock();
  }
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return null;
  try {
    return [name, JSON.parse(data.join("\n"))];
  } catch {
    return null;
  }
}

function citationLabel(c) {
  return c.section ? `${c.title} — ${c.section}` : c.title;
}

function renderCitations(citations) {
  const list = $("citations");
  list.replaceChildren();
  show($("citations-title"), citations.length > 0);
  for (const c of citations) {
    const item = el("li", "citation");
    const open = el("button", "cite-open");
    open.type = "button";
    open.dataset.n = String(c.n);
    open.append(el("span", "cite-n", `[${c.n}]`), " ", el("span", "cite-title", citationLabel(c)));
    open.addEventListener("click", () => openPassage(c, open));
    item.append(open, el("p", "meta", `${c.source}${c.section ? ` · ${c.section}` : ""}`));
    list.append(item);
  }
}

// The final answer, with its [n] markers as buttons that open the cited passage.
function renderAnswer(answer) {
  state.answer = answer;
  const box = $("answer");
  box.replaceChildren();
  const byN = new Map((answer.citations || []).map((c) => [c.n, c]));
  state.citations = answer.citations || [];
  renderCitations(state.citations);
  const parts = String(answer.answer || "").split(/\[(\d+)\]/);
  parts.forEach((part, i) => {
    if (i % 2 === 0) {
      if (part) box.append(document.createTextNode(part));
      return;
    }
    const cited = byN.get(Number(part));
    if (!cited) {
      box.append(document.createTextNode(`[${part}]`));
      return;
    }
    const marker = el("button", "marker", `[${part}]`);
    marker.type = "button";
    marker.setAttribute("aria-label", `Open source ${part}: ${citationLabel(cited)}`);
    marker.addEventListener("click", () => openPassage(cited, marker));
    box.append(marker);
  });
  show($("abstained"), Boolean(answer.abstained));
  box.classList.toggle("is-abstained", Boolean(answer.abstained));
  const ms = answer.timings && answer.timings.total_ms ? ` in ${Math.round(answer.timings.total_ms)} ms` : "";
  const how = answer.mode === "llm" ? "written by the language model" : "quoted from your documents";
  say($("answer-status"), answer.abstained ? `No answer found${ms}.` : `Answered${ms}, ${how}.`);
  show($("feedback-form"), true);
}

// A chunk keeps its source's hard line breaks: join the lines of a paragraph, keep the rest.
function unwrap(text) {
  return text.replace(/([^\n])\n(?=[^\n#>|*\-+\d\s])/g, "$1 ");
}

function openPassage(citation, opener) {
  state.opener = opener;
  $("passage-title").textContent = `[${citation.n}] ${citation.title}`;
  const meta = [`Source: ${citation.source}`];
  if (citation.section) meta.push(`Section: ${citation.section}`);
  $("passage-meta").textContent = meta.join(" · ");
  $("passage-text").textContent = unwrap(citation.text || citation.snippet || "");
  const panel = $("passage");
  show(panel, true);
  panel.focus();
}

function closePassage(restoreFocus = true) {
  show($("passage"), false);
  if (restoreFocus && state.opener && document.body.contains(state.opener)) state.opener.focus();
  state.opener = null;
}

// --- feedback ---------------------------------------------------------------------------------
function setRating(rating) {
  state.rating = rating;
  for (const thumb of document.querySelectorAll(".thumb")) {
    thumb.setAttribute("aria-pressed", String(Number(thumb.dataset.rating) === rating));
  }
}

async function sendFeedback(event) {
  event.preventDefault();
  const status = $("feedback-status");
  if (!state.rating) {
    say(status, "Choose Helpful or Not helpful first.");
    return;
  }
  const fieldset = $("feedback-form").querySelector("fieldset");
  fieldset.disabled = true;
  say(status, "Sending…", "loading");
  try {
    const response = await call("/v1/feedback", {
      method: "POST",
      json: {
        question: state.question,
        answer: state.answer ? state.answer.answer : "",
        rating: state.rating,
        comment: $("comment").value.trim(),
      },
    });
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    say(status, "Thank you: your feedback was recorded.");
  } catch (exc) {
    fieldset.disabled = false;
    say(status, "");
    report(status, exc);
  }
}

// --- sources ----------------------------------------------------------------------------------
async function loadSources() {
  const list = $("sources");
  const status = $("sources-status");
  say(status, "Loading your sources…", "loading");
  try {
    const sources = await getJson("/v1/sources");
    list.replaceChildren();
    say(status, sources.length ? "" : "No sources you can read yet.");
    for (const s of sources) {
      const item = el("li", `source state-${s.state}`);
      const head = el("div", "source-head");
      head.append(el("strong", "source-name", s.source), el("span", `badge ${s.state}`, s.state));
      item.append(head);
      const docs = `${s.documents} document${s.documents === 1 ? "" : "s"} you can read`;
      const synced = s.last_success_at ? `last synced ${ago(s.age_s)}` : "never synced";
      const slo = s.slo_s ? ` (target: every ${duration(s.slo_s)})` : "";
      item.append(el("p", "meta", `${docs} · ${synced}${slo}`));
      if (s.last_change_at) item.append(el("p", "meta", `Last change: ${when(s.last_change_at)}`));
      list.append(item);
    }
  } catch (exc) {
    say(status, "");
    list.replaceChildren();
    report(status, exc);
  }
}

// --- admin ------------------------------------------------------------------------------------
async function loadAdmin() {
  await Promise.all([loadRuns(), loadDeadLetters(), loadAlerts()]);
}

function runCounts(r) {
  return ["added", "updated", "unchanged", "deleted", "failed"].map((k) => `${r[k]} ${k}`).join(", ");
}

async function loadRuns() {
  const list = $("runs");
  const status = $("runs-status");
  say(status, "Loading runs…", "loading");
  try {
    const runs = await getJson("/v1/runs?limit=20");
    list.replaceChildren();
    say(status, runs.length ? "" : "No runs yet.");
    for (const r of runs) {
      const item = el("li", `run status-${r.status}`);
      const head = el("div", "source-head");
      head.append(el("strong", null, `#${r.run_id} ${r.source}`), el("span", `badge ${r.status}`, r.status));
      item.append(head, el("p", "meta", `${r.kind} · ${when(r.started_at)} · ${runCounts(r)}`));
      if (r.error) item.append(el("p", "error-text", r.error));
      list.append(item);
    }
  } catch (exc) {
    say(status, "");
    report(status, exc);
  }
}

function renderDeadLetter(d) {
  const item = el("li", "dead-letter");
  item.append(el("strong", null, d.path), el("p", "meta", `${d.source || ""}${d.run_id ? ` · run #${d.run_id}` : ""}`));
  item.append(el("p", "error-text", d.reason));
  return item;
}

// Dead letters: `GET /v1/dead-letters` where the service has it; otherwise those of this tab's uploads.
async function loadDeadLetters() {
  const list = $("dead");
  const status = $("dead-status");
  say(status, "Loading dead letters…", "loading");
  try {
    const response = await call("/v1/dead-letters?limit=50");
    if (response.status === 404) {
      say(status, "This service does not list dead letters; failed documents are counted in the runs above.");
      return;
    }
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    const letters = await response.json();
    list.replaceChildren(...letters.map(renderDeadLetter));
    say(status, letters.length ? "" : "No dead letters.");
  } catch (exc) {
    say(status, "");
    report(status, exc);
  }
}

async function loadAlerts() {
  const list = $("alerts");
  const status = $("alerts-status");
  say(status, "Loading alerts…", "loading");
  try {
    const response = await call("/v1/monitoring/status");
    if (response.status === 404) {
      say(status, "Monitoring is not enabled on this service.");
      return;
    }
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    const alerts = (await response.json()).alerts || [];
    list.replaceChildren();
    say(status, alerts.length ? "" : "No open alerts.");
    for (const a of alerts) {
      const item = el("li", `alert severity-${a.severity}`);
      const head = el("div", "source-head");
      head.append(el("strong", null, a.kind), el("span", `badge ${a.severity}`, a.severity));
      item.append(head, el("p", null, a.message));
      item.append(el("p", "meta", `seen ${a.count}× · since ${when(a.raised_at)} · last ${when(a.last_seen_at)}`));
      list.append(item);
    }
  } catch (exc) {
    say(status, "");
    report(status, exc);
  }
}

async function upload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  if (!file) return;
  const status = $("upload-status");
  const button = $("upload-button");
  say($("upload-error"), "");
  say(status, `Uploading ${file.name}…`, "loading");
  button.disabled = true;
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("groups", $("upload-groups").value);
  form.append("replace", $("upload-replace").checked ? "true" : "false");
  try {
    const response = await call("/v1/documents", { method: "POST", form });
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    const body = await response.json();
    const doc = body.document;
    say(status, `Uploaded “${doc.title}” (${doc.chunks} chunk${doc.chunks === 1 ? "" : "s"}), readable by ${doc.groups.join(", ")}.`);
    $("upload-form").reset();
    for (const d of body.run.dead_letters || []) $("dead").append(renderDeadLetter(d));
    await Promise.all([loadSources(), loadRuns()]);
  } catch (exc) {
    say(status, "");
    report($("upload-error"), exc);
  } finally {
    button.disabled = false;
  }
}

// --- wiring -----------------------------------------------------------------------------------
function start() {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut("You are signed out."));
  $("ask-form").addEventListener("submit", ask);
  $("feedback-form").addEventListener("submit", sendFeedback);
  for (const thumb of document.querySelectorAll(".thumb")) {
    thumb.addEventListener("click", () => setRating(Number(thumb.dataset.rating)));
  }
  $("passage-close").addEventListener("click", () => closePassage());
  $("passage").addEventListener("keydown", (e) => {
    if (e.key === "Escape") closePassage();
  });
  $("sources-refresh").addEventListener("click", loadSources);
  $("admin-refresh").addEventListener("click", loadAdmin);
  $("upload-form").addEventListener("submit", upload);
  if (key()) enter();
  else $("key").focus();
}

start();
