// fileconsul's dashboard. Every string from the server (paths, messages, node names, hook
// output: all of it from Consul's KV) is written with textContent, never as HTML.
"use strict";

const ORDER = ["rejected", "halted", "failed", "untrusted", "drifted", "lagging", "current"];
const $ = (id) => document.getElementById(id);
const tokenMeta = document.querySelector('meta[name="fileconsul-action-token"]');
const TOKEN = tokenMeta ? tokenMeta.content : null;

let state = null;
let filter = null;
let shown = null;  // the revision whose details are open

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function ago(seconds) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return new Date(seconds * 1000).toLocaleString();
}

function when(iso) {
  const t = Date.parse(iso);
  return isNaN(t) ? iso : new Date(t).toLocaleString() + " (" + ago(t / 1000) + ")";
}

function renderHead(head) {
  const box = $("head");
  if (!head) {
    box.replaceChildren(el("p", "muted", "no revision yet"));
    return;
  }
  const line = el("div");
  line.append(el("span", "rev", "r" + head.revision));
  line.append(el("span", "who", head.node + " (" + head.user + ")"));
  const files = head.files + (head.files === 1 ? " file" : " files");
  line.append(el("span", "muted", " · " + when(head.time) + " · " + files));
  const parts = [line];
  parts.push(el("p", "signer", head.signed_by ? "signed by " + head.signed_by : "not signed"));
  if (head.message) parts.push(el("p", "message", head.message));
  if (head.rollback_of) parts.push(el("p", "muted", "rolled back to r" + head.rollback_of));
  box.replaceChildren(...parts);
}

function renderHalt(fleet) {
  const halt = fleet.halt;
  $("halt").hidden = !halt;
  if (halt) {
    $("halt-title").textContent = "Revision " + halt.revision + " is HALTED";
    $("halt-text").textContent =
      halt.node + " stopped it " + ago(halt.time) + ": " + halt.reason + " · " +
      halt.applied_before + (halt.applied_before === 1 ? " node" : " nodes") + " applied it before";
  }
  if (actions) {
    actions.resume.hidden = !halt;
    actions.form.hidden = Boolean(halt) || !state.head;
  }
}

// The buttons exist only on a page served with actions allowed (it carries the token).
function makeActions() {
  const resume = el("button", "resume", "Resume the rollout");
  resume.type = "button";
  resume.id = "resume";
  resume.hidden = true;
  $("halt").append(resume);
  const form = el("form");
  form.id = "halt-form";
  form.hidden = true;
  const reason = el("input");
  reason.id = "halt-reason";
  reason.maxLength = 500;
  reason.placeholder = "why halt (optional)";
  const button = el("button", null, "Halt the rollout");
  button.type = "submit";
  button.id = "halt-button";
  form.append(reason, button);
  const result = el("p", "result");
  result.id = "action-result";
  result.hidden = true;
  $("actions").append(form, result);
  resume.addEventListener("click", () => act("/api/resume", {}));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act("/api/halt", { reason: reason.value });
  });
  return { resume, form };
}

function detail(n) {
  const parts = [];
  if (n.drift_count) {
    const more = n.drift_count > n.drifted.length ? " and " + (n.drift_count - n.drifted.length) + " more" : "";
    parts.push("changed here by hand: " + n.drifted.join(", ") + more);
  }
  if (n.message) parts.push(n.message);
  if (n.signer) parts.push("holds r" + n.revision + " signed by " + n.signer + " " + when(n.signed_at));
  if (n.check_exit) parts.push("check exit " + n.check_exit);
  if (n.hook_exit) parts.push("hook exit " + n.hook_exit);
  if (n.output) parts.push(n.output);
  return parts.join("\n");
}

function chip(label, value) {
  const node = el("span", "chip" + (filter === value ? " on" : ""), label);
  node.tabIndex = 0;
  node.dataset.state = value === null ? "all" : value;
  const choose = () => { filter = value; render(); };
  node.addEventListener("click", choose);
  node.addEventListener("keydown", (event) => { if (event.key === "Enter") choose(); });
  return node;
}

function renderCounts(fleet) {
  const counts = fleet.counts || {};
  const chips = [chip("all " + fleet.nodes.length, null)];
  for (const name of ORDER) {
    if (counts[name]) chips.push(chip(name + " " + counts[name], name));
  }
  $("counts").replaceChildren(...chips);
  const current = counts.current || 0;
  $("summary").textContent = fleet.nodes.length ? current + " of " + fleet.nodes.length + " current" : "";
}

// Rows go in groups of CHUNK, each a block the browser skips laying out and drawing while
// it is off screen (content-visibility): a fleet of thousands costs the rows in view.
const CHUNK = 50;

function renderNodes(fleet) {
  const groups = document.createDocumentFragment();
  let rows = null;
  for (const n of fleet.nodes) {
    if (filter !== null && n.state !== filter) continue;
    const row = el("div", "row");
    row.dataset.node = n.node;
    row.dataset.state = n.state;
    row.setAttribute("role", "row");
    row.append(el("div", "node", n.node));
    const state = el("div", "state-cell");
    state.append(el("span", "state " + n.state, n.state));
    row.append(state);
    row.append(el("div", "revision", "r" + n.revision));
    row.append(el("div", "behind", n.behind));
    row.append(el("div", "when", ago(n.time)));
    row.append(el("div", "detail", detail(n)));
    if (rows === null || rows.childElementCount === CHUNK) {
      rows = el("div", "rows");
      rows.setAttribute("role", "rowgroup");
      groups.append(rows);
    }
    rows.append(row);
  }
  $("rows").replaceChildren(groups);
  $("no-nodes").hidden = fleet.nodes.length > 0;
  $("nodes").hidden = fleet.nodes.length === 0;
}

function renderLog(log) {
  const items = document.createDocumentFragment();
  for (const c of log) {
    const li = el("li", c.revision === shown ? "on" : "");
    li.dataset.revision = c.revision;
    const top = el("div");
    top.append(el("strong", null, "r" + c.revision + " "));
    top.append(el("span", "who", c.node + " (" + c.user + ")"));
    if (c.signed_by) top.append(el("span", "signer", " · signed by " + c.signed_by));
    li.append(top);
    li.append(el("div", "when", when(c.time) + " · " + c.change_count + (c.change_count === 1 ? " change" : " changes")));
    if (c.message) li.append(el("div", "msg", c.message));
    li.addEventListener("click", () => { location.hash = "r" + c.revision; });
    items.append(li);
  }
  $("log").replaceChildren(items);
}

function render() {
  if (!state) return;
  document.title = "fileconsul " + state.prefix;
  $("prefix").textContent = state.prefix;
  $("trouble").hidden = !state.trouble;
  $("trouble").textContent = state.trouble || "";
  renderHead(state.head);
  renderHalt(state.fleet);
  renderCounts(state.fleet);
  renderNodes(state.fleet);
  renderLog(state.log);
  const root = document.documentElement;
  root.dataset.version = state.version;
  root.dataset.revision = state.fleet.revision;
  // Marked once the frame with it was drawn (style and layout included), for the benchmark.
  const version = String(state.version);
  requestAnimationFrame(() => setTimeout(() => {
    root.dataset.drawn = version;
    if (!root.dataset.firstDrawn) root.dataset.firstDrawn = performance.now().toFixed(1);
  }, 0));
}

function patchLine(line) {
  let kind = null;
  if (line.startsWith("diff ")) kind = "file";
  else if (line.startsWith("@@")) kind = "hunk";
  else if (line.startsWith("+") && !line.startsWith("+++")) kind = "add";
  else if (line.startsWith("-") && !line.startsWith("---")) kind = "del";
  return el("span", kind, line + "\n");
}

async function showRevision(number) {
  shown = number;
  if (state) renderLog(state.log);
  const box = $("revision");
  box.hidden = false;
  $("revision-title").textContent = "r" + number;
  $("revision-meta").textContent = "loading…";
  $("revision-message").textContent = "";
  $("revision-changes").replaceChildren();
  $("revision-patch").replaceChildren();
  $("revision-note").hidden = true;
  let data;
  try {
    const answer = await fetch("/api/revisions/" + number, { headers: { Accept: "application/json" } });
    data = await answer.json();
    if (!answer.ok) throw new Error(data.error || answer.statusText);
  } catch (error) {
    $("revision-meta").textContent = String(error.message || error);
    return;
  }
  if (shown !== number) return;
  const signer = data.signed_by ? " · signed by " + data.signed_by : " · not signed";
  $("revision-meta").textContent = data.node + " (" + data.user + ") · " + when(data.time) + signer;
  $("revision-message").textContent = data.message;
  const changes = document.createDocumentFragment();
  for (const c of data.changes) {
    const li = el("li");
    li.append(el("span", "kind", c.change));
    li.append(el("span", "path", c.path));
    changes.append(li);
  }
  $("revision-changes").replaceChildren(changes);
  $("revision-note").hidden = !data.patch_note;
  $("revision-note").textContent = data.patch_note || "";
  const lines = document.createDocumentFragment();
  for (const line of (data.patch || "").split("\n").slice(0, -1)) lines.append(patchLine(line));
  $("revision-patch").replaceChildren(lines);
  $("revision-patch").hidden = !data.patch;
}

function route() {
  const match = /^#r([0-9]+)$/.exec(location.hash);
  if (match) showRevision(Number(match[1]));
}

async function act(path, body) {
  const result = $("action-result");
  result.hidden = false;
  result.textContent = "…";
  try {
    const answer = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Fileconsul-Action-Token": TOKEN },
      body: JSON.stringify(body),
    });
    const data = await answer.json();
    result.textContent = answer.ok ? data.message : "refused: " + data.error;
  } catch (error) {
    result.textContent = "failed: " + String(error.message || error);
  }
}

let wanted = 0;
let fetching = false;

async function load() {
  fetching = true;
  try {
    while (!state || state.version < wanted) {
      const answer = await fetch("/api/state", { headers: { Accept: "application/json" } });
      if (!answer.ok) throw new Error(answer.statusText);
      const started = performance.now();
      state = await answer.json();
      render();
      document.documentElement.dataset.renderMs = (performance.now() - started).toFixed(1);
      if (state.version < wanted) await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } catch (error) {
    $("live").textContent = "reconnecting";
    $("live").className = "live off";
  } finally {
    fetching = false;
  }
}

function follow() {
  const live = $("live");
  const events = new EventSource("/api/events");
  events.addEventListener("open", () => { live.textContent = "live"; live.className = "live"; });
  events.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "live off"; });
  // Each event names a new version; the snapshot itself is fetched (one at a time: events
  // that land meanwhile are folded into the next fetch).
  events.addEventListener("state", (event) => {
    wanted = Number(event.data);
    if (!fetching) load();
  });
}

const actions = TOKEN ? makeActions() : null;
window.addEventListener("hashchange", route);
setInterval(render, 10000);  // the "n s ago" columns
follow();
route();
