// The autonomic dashboard: one page, no build step. It talks to the same /v1 API as any
// client, with the API key kept in this tab's sessionStorage. Text from runs is always
// inserted as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 200; // events per lazy-loaded page of a run's timeline
let key = sessionStorage.getItem("autonomic-key") || "";
let stopStream = null; // ends the live stream of the run page being shown
let refreshTimer = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${key}`, ...(options.headers || {}) };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    ...options,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 401) {
    logout("your key was refused: log in again");
    throw new Error("unauthorized");
  }
  if (!response.ok && response.status !== 202) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return response.status === 204 ? null : response.json();
}

// -- formatting ------------------------------------------------------------------------------

const money = (v) => (v === null || v === undefined ? "" : `$${Number(v).toFixed(4)}`);
function age(ts) {
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}
const short = (text, n = 120) => {
  const flat = String(text ?? "").replace(/\s+/g, " ");
  return flat.length <= n ? flat : flat.slice(0, n - 1) + "…";
};
const args = (a) => Object.entries(a || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");

// The rationale → action → observation tree: each event's line and its depth in it.
function describe(e, tools) {
  switch (e.type) {
    case "RunStarted": return [0, `▶ run started: agent ${e.agent}, model ${e.model || "?"} — goal: ${short(e.goal, 200)}`];
    case "RunForked": return [0, `⑂ forked from ${e.from_run_id} at event ${e.at_seq}`];
    case "ModelCalled": return [0, `○ model call (${e.purpose})`];
    case "ModelResponded": {
      const u = e.usage || {};
      let line = `● model ${e.model}: ${u.input_tokens || 0} in / ${u.output_tokens || 0} out tokens, ${Number(e.latency_ms || 0).toFixed(1)} ms, ${money(e.cost) || "unpriced"}`;
      if (e.text && e.text.trim()) line += `\n  ${(e.tool_calls || []).length ? "thought" : "reply"}: ${short(e.text, 300)}`;
      return [0, line];
    }
    case "ActionRequested": tools[e.action_id] = e.tool; return [1, `├─ action ${e.tool}(${short(args(e.args), 160)})`];
    case "ActionCompleted": return [2, `└─ ${tools[e.action_id] || e.action_id} → ${short(e.observation, 200)} (${Number(e.duration_ms || 0).toFixed(1)} ms)`];
    case "ActionFailed": return [2, `└─ ${tools[e.action_id] || e.action_id} ✗ ${short(e.error)}`];
    case "ActionRetried": return [2, `↻ attempt ${e.attempt} failed: ${short(e.error, 80)}`];
    case "ApprovalRequested": tools[e.action_id] = e.tool; return [1, `✋ approval needed: ${e.tool}(${short(args(e.args), 120)}) [${e.digest.slice(0, 12)}] ${e.reason}`];
    case "ApprovalGranted": return [2, `✓ approved by ${e.approver} [${e.digest.slice(0, 12)}]`];
    case "ApprovalDenied": return [2, `✗ denied by ${e.approver}${e.reason ? ": " + e.reason : ""}`];
    case "SignalReceived": return [0, `✉ signal ${e.name}: ${short(JSON.stringify(e.data), 80)}`];
    case "GuardTripped": return [0, `⚠ guard ${e.guard}: ${e.detail}`];
    case "Suspended": return [0, `⏸ waiting: ${e.reason}`];
    case "Resumed": return [0, `↻ resumed by ${e.by}${e.reason ? " (" + e.reason + ")" : ""}`];
    case "RunCompleted": return [0, `■ completed: ${short(e.answer, 300)}`];
    case "RunFailed": return [0, `■ failed: ${e.error}`];
    case "RunCancelled": return [0, `■ cancelled by ${e.by}`];
    case "RunDead": return [0, `■ dead: ${e.reason}`];
    default: return [0, `${e.type}`];
  }
}

// -- navigation ------------------------------------------------------------------------------

function show(section) {
  for (const id of ["login", "runs", "new", "run", "approvals", "costs"]) $(id).hidden = id !== section;
  $("nav").hidden = $("logout").hidden = section === "login";
}

function leave() {
  if (stopStream) stopStream();
  stopStream = null;
  clearInterval(refreshTimer);
  refreshTimer = null;
}

async function route() {
  leave();
  if (!key) return show("login");
  const [, view, id] = (location.hash || "#/runs").split("/");
  try {
    if (view === "runs" && id) return await showRun(decodeURIComponent(id));
    if (view === "new") return await showNew();
    if (view === "approvals") return await showApprovals();
    if (view === "costs") return await showCosts();
    return await showRuns();
  } catch (e) {
    if (e.message !== "unauthorized") console.error(e);
  }
}

function logout(message) {
  key = "";
  sessionStorage.removeItem("autonomic-key");
  $("who").textContent = "";
  $("login-error").textContent = message || "";
  leave();
  show("login");
}

// -- runs ---------------------------------------------------------------------------------------

let runsCursor = null;

function runRow(run) {
  const tr = el("tr", null, "link");
  tr.dataset.runId = run.run_id;
  const tokens = run.usage ? run.usage.total_tokens : "";
  for (const [text, cls] of [
    [run.run_id], [run.agent], [run.waiting_for ? `waiting: ${run.waiting_for}` : run.status, `status-${run.status}`],
    [tokens], [money(run.cost)], [age(run.created_at)], [short(run.goal, 80)],
  ]) tr.append(el("td", text, cls));
  tr.onclick = () => { location.hash = `#/runs/${encodeURIComponent(run.run_id)}`; };
  return tr;
}

async function showRuns() {
  show("runs");
  const load = async () => {
    const page = await api("/v1/runs?limit=50");
    $("runs-body").replaceChildren(...page.runs.map(runRow));
    runsCursor = page.next_cursor;
    $("more-runs").hidden = !runsCursor;
    updatePending();
  };
  await load();
  refreshTimer = setInterval(() => load().catch(() => {}), 2000); // live updates
}

$("more-runs").onclick = async () => {
  clearInterval(refreshTimer); // paging: stop replacing the list
  const page = await api(`/v1/runs?limit=50&cursor=${encodeURIComponent(runsCursor)}`);
  $("runs-body").append(...page.runs.map(runRow));
  runsCursor = page.next_cursor;
  $("more-runs").hidden = !runsCursor;
};

async function showNew() {
  show("new");
  const agents = await api("/v1/agents");
  $("new-agent").replaceChildren(...agents.map((a) => {
    const option = el("option", `${a.name} (${a.model || "no model"})`);
    option.value = a.name;
    return option;
  }));
}

$("new-form").onsubmit = async (event) => {
  event.preventDefault();
  $("new-error").textContent = "";
  try {
    const run = await api("/v1/runs", { method: "POST", body: { agent: $("new-agent").value, goal: $("new-goal").value } });
    location.hash = `#/runs/${encodeURIComponent(run.run_id)}`;
  } catch (e) {
    $("new-error").textContent = e.message;
  }
};

// -- one run: summary, approvals, a lazily loaded timeline that then follows live ---------

async function showRun(runId) {
  show("run");
  $("run-id").textContent = runId;
  $("timeline").replaceChildren();
  $("context").hidden = true;
  $("run-message").textContent = "";
  const state = { runId, last: 0, tools: {}, start: null, done: false, loading: false };
  await refreshRun(runId);
  const total = (await api(`/v1/runs/${encodeURIComponent(runId)}`)).events;

  // Lazy loading: a page of events whenever the end of the list comes into view.
  const observer = new IntersectionObserver(async (entries) => {
    if (!entries.some((entry) => entry.isIntersecting) || state.loading || state.done) return;
    state.loading = true;
    try {
      const page = await api(`/v1/runs/${encodeURIComponent(runId)}/log?after=${state.last}&limit=${PAGE}`);
      page.events.forEach((e) => addEvent(state, e));
      if (page.events.length < PAGE) {
        state.done = true;
        observer.disconnect();
        refreshRun(runId).catch(() => {}); // the summary and approvals as of the last event
        follow(state);
      }
    } finally {
      state.loading = false;
      if (!state.done) { observer.disconnect(); observer.observe($("timeline-end")); } // re-check
    }
  });
  observer.observe($("timeline-end"));
  $("timeline-count").textContent = `(${total} events)`;
  stopStream = () => observer.disconnect();
}

function addEvent(state, e) {
  if (e.seq <= state.last) return; // never twice
  state.last = e.seq;
  if (state.start === null) state.start = e.ts;
  const [depth, text] = describe(e, state.tools);
  const li = el("li", null, `depth${depth}`);
  li.dataset.seq = e.seq;
  li.dataset.type = e.type;
  li.append(el("span", e.seq, "seq"), el("span", `+${(e.ts - state.start).toFixed(3)}s`, "t"), el("span", text, "text"));
  if (e.type === "ModelCalled") {
    const context = el("button", "context");
    context.onclick = () => showContext(state.runId, e.seq);
    li.append(context);
  }
  const fork = el("button", "fork here");
  fork.title = "start a new run sharing the events up to this one";
  fork.onclick = () => forkAt(state.runId, e.seq);
  li.append(fork);
  $("timeline").append(li);
  $("timeline-count").textContent = `(${state.last} events)`;
}

// Follows the run live from the last event shown: SSE read with fetch (EventSource
// cannot send the key), resumed from the last seq after any disconnect.
function follow(state) {
  const controller = new AbortController();
  let stopped = false;
  stopStream = () => { stopped = true; controller.abort(); };
  (async () => {
    while (!stopped) {
      try {
        const response = await fetch(`/v1/runs/${encodeURIComponent(state.runId)}/events`, {
          headers: { Authorization: `Bearer ${key}`, "Last-Event-ID": String(state.last) },
          signal: controller.signal,
        });
        if (response.status === 204 || !response.ok) break; // ended and all shown, or refused
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const frame = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
            if (data) {
              addEvent(state, JSON.parse(data));
              refreshRun(state.runId).catch(() => {});
            }
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    refreshRun(state.runId).catch(() => {});
  })();
}

async function refreshRun(runId) {
  const run = await api(`/v1/runs/${encodeURIComponent(runId)}`);
  const rows = [
    ["status", run.waiting_for ? `waiting for ${run.waiting_for}` : run.status],
    ["agent", run.agent], ["goal", run.goal],
    ["tokens", run.usage ? `${run.usage.input_tokens} in, ${run.usage.output_tokens} out` : ""],
    ["cost", money(run.cost)], ["model calls", run.model_calls], ["events", run.events],
    ["answer", run.answer], ["error", run.error],
    ["forked from", run.forked_from ? `${run.forked_from} at ${run.forked_at}` : null],
  ];
  $("run-summary").replaceChildren(...rows.filter(([, v]) => v !== null && v !== undefined && v !== "").flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  $("run-summary").dataset.status = run.status;
  $("cancel-run").disabled = ["completed", "failed", "cancelled"].includes(run.status);
  $("cancel-run").onclick = () => act(() => api(`/v1/runs/${encodeURIComponent(runId)}/cancel`, { method: "POST" }), "cancelled");
  $("replay-run").onclick = () => act(async () => {
    const r = await api(`/v1/runs/${encodeURIComponent(runId)}/replay`, { method: "POST" });
    return r.ok ? `replay: ${r.detail}` : `replay diverged: ${r.detail}`;
  });
  const pending = run.pending_approvals ? await api(`/v1/runs/${encodeURIComponent(runId)}/approvals`) : [];
  $("run-approvals").replaceChildren(...pending.map((p) => approvalCard(p, () => refreshRun(runId))));
}

async function act(action, done) {
  try {
    const result = await action();
    $("run-message").textContent = typeof result === "string" ? result : done || "";
  } catch (e) {
    $("run-message").textContent = e.message;
  }
}

async function forkAt(runId, seq) {
  try {
    const run = await api(`/v1/runs/${encodeURIComponent(runId)}/fork`, { method: "POST", body: { at_seq: seq } });
    location.hash = `#/runs/${encodeURIComponent(run.run_id)}`;
  } catch (e) {
    $("run-message").textContent = e.message;
  }
}

async function showContext(runId, seq) {
  const context = await api(`/v1/runs/${encodeURIComponent(runId)}/context?at=${seq}`);
  const lines = [`context of the model call at event ${seq}: ~${context.estimated_tokens} tokens`];
  for (const m of context.messages) lines.push(`\n[${m.role}] ~${m.estimated_tokens} tokens\n${m.content}${m.tool_calls ? "\ncalls: " + JSON.stringify(m.tool_calls) : ""}`);
  $("context").textContent = lines.join("\n");
  $("context").hidden = false;
}

// -- approvals ---------------------------------------------------------------------------------

function approvalCard(p, after) {
  const card = el("div", null, "approval");
  card.dataset.digest = p.digest;
  const link = el("a", p.run_id);
  link.href = `#/runs/${encodeURIComponent(p.run_id)}`;
  card.append(el("div", `${p.tool}(${args(p.args)})`), el("div", `${p.reason} — digest ${p.digest.slice(0, 12)} — run `));
  card.lastChild.append(link);
  if (p.rationale) card.append(el("div", `rationale: ${short(p.rationale, 300)}`));
  const decide = (verb) => async () => {
    try {
      await api(`/v1/runs/${encodeURIComponent(p.run_id)}/approvals/${p.digest}/${verb}`, { method: "POST", body: {} });
      card.replaceChildren(el("span", verb === "approve" ? "approved" : "denied"));
      await after();
    } catch (e) {
      card.append(el("span", ` ${e.message}`, "error"));
    }
  };
  const approve = el("button", "Approve");
  approve.onclick = decide("approve");
  const deny = el("button", "Deny");
  deny.onclick = decide("deny");
  card.append(approve, deny);
  return card;
}

async function updatePending() {
  const pending = await api("/v1/approvals");
  $("pending-count").textContent = pending.length ? `(${pending.length})` : "";
  return pending;
}

async function showApprovals() {
  show("approvals");
  const load = async () => {
    const pending = await updatePending();
    $("approvals-list").replaceChildren(...(pending.length ? pending.map((p) => approvalCard(p, load)) : [el("p", "Nothing waits for a decision.")]));
  };
  await load();
  refreshTimer = setInterval(() => load().catch(() => {}), 3000);
}

// -- costs ---------------------------------------------------------------------------------------

async function showCosts() {
  show("costs");
  const runs = [];
  let cursor = null;
  do { // at most 10 pages of 200: the newest 2,000 runs
    const page = await api(`/v1/runs?limit=200${cursor ? "&cursor=" + encodeURIComponent(cursor) : ""}`);
    runs.push(...page.runs);
    cursor = page.next_cursor;
  } while (cursor && runs.length < 2000);
  const sum = (keyOf) => {
    const totals = new Map();
    for (const r of runs) {
      const t = totals.get(keyOf(r)) || { runs: 0, tokens: 0, cost: 0 };
      t.runs += 1; t.tokens += r.usage ? r.usage.total_tokens : 0; t.cost += r.cost || 0;
      totals.set(keyOf(r), t);
    }
    return [...totals.entries()].sort((a, b) => b[1].cost - a[1].cost || String(a[0]).localeCompare(String(b[0])));
  };
  const rows = (totals) => totals.map(([k, t]) => {
    const tr = el("tr");
    tr.append(el("td", k), el("td", t.runs), el("td", t.tokens), el("td", money(t.cost)));
    return tr;
  });
  $("cost-agents").replaceChildren(...rows(sum((r) => r.agent)));
  $("cost-days").replaceChildren(...rows(sum((r) => new Date(r.created_at * 1000).toISOString().slice(0, 10))));
}

// -- start ----------------------------------------------------------------------------------------

$("login-form").onsubmit = async (event) => {
  event.preventDefault();
  key = $("key").value.trim();
  try {
    const me = await api("/v1/me");
    sessionStorage.setItem("autonomic-key", key);
    $("who").textContent = `${me.name} @ ${me.tenant}`;
    $("key").value = "";
    route();
  } catch (e) {
    if (e.message !== "unauthorized") logout(e.message);
  }
};
$("logout").onclick = () => logout("");
window.addEventListener("hashchange", route);
if (key) api("/v1/me").then((me) => { $("who").textContent = `${me.name} @ ${me.tenant}`; }).catch(() => {});
route();
