// datagen review dashboard. Vanilla JS, no build. Generated text is untrusted: the DOM is
// built with createElement/textContent only (never innerHTML), and the CSP forbids inline code.
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// --- state ---------------------------------------------------------------------------------
const state = { items: [], cursor: null, index: -1, detail: null, editing: false, filter: {} };

function token() { return sessionStorage.getItem("datagen.token") || ""; }
function reviewer() { return localStorage.getItem("datagen.reviewer") || ""; }

function toast(msg, bad) {
  const t = $("#toast");
  t.textContent = msg;
  t.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ""; }, bad ? 5000 : 1800);
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (reviewer()) headers["X-Reviewer"] = reviewer();
  if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(opts.json); }
  const res = await fetch(path, { method: opts.method || "GET", headers, body: opts.body });
  if (!res.ok) {
    let detail = res.statusText;
    try { const j = await res.json(); detail = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail); } catch (_) { /* not JSON */ }
    if (res.status === 401 || res.status === 403) detail = "token: " + detail;
    throw new Error(`${res.status}: ${detail}`);
  }
  return opts.raw ? res : res.json();
}

// --- filters -------------------------------------------------------------------------------
function readFilter() {
  const f = {};
  for (const [k, v] of new FormData($("#filters")).entries()) if (String(v).trim() !== "") f[k] = String(v).trim();
  return f;
}

function query(f, extra) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(Object.assign({}, f, extra || {}))) if (v !== undefined && v !== null && v !== "") p.append(k, v);
  return p.toString();
}

function filterOnly(f) { const g = Object.assign({}, f); delete g.sort; return g; }

async function loadOptions() {
  try {
    const [runs, reasons] = await Promise.all([api("/api/runs"), api("/api/reasons")]);
    const runSel = $("#filters [name=run]");
    for (const r of runs) runSel.append(el("option", { value: r.name }, `${r.name} (${r.lang}, ${r.kept} kept)`));
    const reasonSel = $("#filters [name=reason]");
    for (const r of reasons) reasonSel.append(el("option", { value: r }, r));
  } catch (e) { toast(e.message, true); }
}

async function applyFilter() {
  const gen = state.gen = (state.gen || 0) + 1; // a newer filter makes older answers moot
  state.filter = readFilter();
  state.items = []; state.cursor = null; state.index = -1;
  $("#list").replaceChildren();
  await loadMore(gen);
  if (gen !== state.gen) return;
  if (state.items.length) select(0); else $("#detail").replaceChildren(el("p", { class: "muted" }, "Nothing matches this filter."));
  const c = await api("/api/samples/count?" + query(filterOnly(state.filter))).catch(() => null);
  if (gen !== state.gen) return;
  $("#count").textContent = c ? `${c.count}${c.capped ? "+" : ""} matching` : "";
  if (!$("#stats-view").hidden) loadStats();
}

async function loadMore(gen) {
  gen = typeof gen === "number" ? gen : state.gen;
  try {
    const page = await api("/api/samples?" + query(state.filter, { limit: 100, cursor: state.cursor || "" }));
    if (gen !== state.gen) return;
    for (const it of page.items) { state.items.push(it); $("#list").append(listItem(it, state.items.length - 1)); }
    state.cursor = page.next_cursor;
    $("#more").hidden = !page.next_cursor;
  } catch (e) { toast(e.message, true); }
}

function badge(status) { return el("span", { class: "badge " + status }, status); }

function listItem(it, i) {
  return el("li", { "data-i": i, "data-id": it.id, on: { click: () => select(i) } },
    badge(it.status),
    el("span", { class: "id" }, "#" + it.id),
    it.nearest_score !== null ? el("span", { class: "score", title: "nearest ROUGE-L" }, it.nearest_score.toFixed(2)) : null,
    el("span", { class: "text" }, it.instruction));
}

function refreshListItem(i) {
  const old = $(`#list li[data-i="${i}"]`);
  if (old) { const fresh = listItem(state.items[i], i); if (i === state.index) fresh.classList.add("current"); old.replaceWith(fresh); }
}

// --- one sample ----------------------------------------------------------------------------
async function select(i) {
  if (i < 0 || i >= state.items.length) return;
  state.index = i; state.editing = false;
  for (const li of document.querySelectorAll("#list li.current")) li.classList.remove("current");
  const li = $(`#list li[data-i="${i}"]`);
  if (li) { li.classList.add("current"); li.scrollIntoView({ block: "nearest" }); }
  const id = state.items[i].id;
  try {
    const d = await api(`/api/samples/${id}`);
    if (state.items[state.index]?.id !== id) return; // the reviewer moved on meanwhile
    state.detail = d;
    renderDetail(d, null);
    const sim = await api(`/api/samples/${id}/similar?k=5`).catch(() => []);
    if (state.detail === d && !state.editing) renderDetail(d, sim);
  } catch (e) { toast(e.message, true); }
}

function pieces(parts) {
  return parts.map(([text, shared]) => shared ? el("mark", {}, text) : document.createTextNode(text));
}

function compare(title, a, b, score) {
  return el("div", { class: "compare" },
    el("h3", {}, title, score !== null && score !== undefined ? el("span", { class: "score" }, " ROUGE-L " + Number(score).toFixed(3)) : null),
    el("div", { class: "pair" },
      el("div", { class: "side" }, el("div", { class: "label" }, "this sample"), el("p", {}, a)),
      el("div", { class: "side" }, el("div", { class: "label" }, "neighbour"), el("p", {}, b))));
}

function renderDetail(d, similar) {
  const meta = el("dl", { class: "meta" },
    el("dt", {}, "status"), el("dd", {}, badge(d.status)),
    d.reason ? [el("dt", {}, "reason"), el("dd", {}, d.reason + (d.detail ? ` — ${d.detail}` : ""))] : null,
    el("dt", {}, "run"), el("dd", {}, `${d.run} · ${d.lang} · #${d.id}`),
    el("dt", {}, "classification"), el("dd", {}, d.is_classification === null ? "unknown" : d.is_classification ? "yes" : "no"),
    el("dt", {}, "length"), el("dd", {}, `${d.length} chars`),
    d.nearest_score !== null ? [el("dt", {}, "nearest ROUGE-L"), el("dd", {}, d.nearest_score.toFixed(3))] : null,
    d.reviewed_by ? [el("dt", {}, "reviewed by"), el("dd", {}, d.reviewed_by + (d.review_note ? ` — “${d.review_note}”` : ""))] : null);

  const instances = el("ol", { class: "instances" }, d.instances.map((x) =>
    el("li", {}, x.input ? el("div", { class: "input" }, el("span", { class: "label" }, "input "), x.input) : null,
      el("div", { class: "output" }, el("span", { class: "label" }, "output "), x.output))));

  const blocks = [];
  if (d.nearest && d.nearest_highlight) blocks.push(compare("Nearest kept instruction when it was filtered", pieces(d.nearest_highlight.a), pieces(d.nearest_highlight.b), d.nearest_score));
  if (similar && similar.length) {
    const top = similar[0];
    if (!d.nearest) blocks.push(compare("Most similar kept instruction", pieces(top.highlight.a), pieces(top.highlight.b), top.score));
    blocks.push(el("div", { class: "similar" }, el("h3", {}, "Similar kept instructions"),
      el("ol", {}, similar.map((s) => el("li", {}, el("span", { class: "score" }, s.score.toFixed(3)), " ", el("span", {}, s.instruction), el("span", { class: "muted" }, ` #${s.id}`))))));
  } else if (similar) blocks.push(el("p", { class: "muted" }, "No similar kept instructions in this run."));

  const req = d.request ? el("details", { class: "request" }, el("summary", {}, `Request #${d.request.id} (${d.request.stage}, ${d.request.model})`),
    el("h4", {}, "prompt"), el("pre", {}, d.request.prompt), el("h4", {}, "response"), el("pre", {}, d.request.response)) : null;
  const audit = d.audit && d.audit.length ? el("details", { class: "audit" }, el("summary", {}, `History (${d.audit.length})`),
    el("ul", {}, d.audit.map((a) => el("li", {}, `${a.at.replace("T", " ").slice(0, 19)} ${a.actor} ${a.action}${a.note ? " — " + a.note : ""}`)))) : null;

  $("#detail").replaceChildren(
    el("div", { class: "actions" },
      el("button", { type: "button", class: "approve", on: { click: () => review("approve") } }, "Approve (a)"),
      el("button", { type: "button", class: "reject", on: { click: () => review("reject") } }, "Reject (r)"),
      el("button", { type: "button", on: { click: startEdit } }, "Edit (e)"),
      el("input", { id: "note", placeholder: "note (n)", maxlength: 2000 })),
    el("p", { class: "instruction", id: "instruction" }, d.instruction),
    ...[meta, el("h3", {}, `Instances (${d.instances.length})`), instances, ...blocks, req, audit].filter(Boolean));
}

async function review(action) {
  const it = state.items[state.index];
  if (!it) return;
  const note = ($("#note")?.value || "").trim();
  try {
    const r = await api(`/api/samples/${it.id}/${action}`, { method: "POST", json: note ? { note } : {} });
    it.status = r.status; it.reviewed_by = r.reviewed_by;
    refreshListItem(state.index);
    toast(`#${it.id} ${r.status}`);
    if (state.index + 1 < state.items.length) select(state.index + 1);
    else if (state.cursor) { await loadMore(); select(state.index + 1); }
    else select(state.index);
  } catch (e) { toast(e.message, true); }
}

function startEdit() {
  const d = state.detail;
  if (!d) return;
  state.editing = true;
  const rows = el("div", { id: "edit-instances" });
  const addRow = (x) => rows.append(el("div", { class: "inst-row" },
    el("textarea", { class: "in", rows: 2, placeholder: "input (may be empty)" }, x.input),
    el("textarea", { class: "out", rows: 2, placeholder: "output" }, x.output),
    el("button", { type: "button", title: "remove", on: { click: (ev) => ev.target.parentElement.remove() } }, "×")));
  d.instances.forEach(addRow);
  const form = el("form", { id: "edit", on: { submit: (ev) => { ev.preventDefault(); saveEdit(); } } },
    el("label", {}, "Instruction", el("textarea", { id: "edit-instruction", rows: 3, maxlength: 8000 }, d.instruction)),
    el("h3", {}, "Instances"), rows,
    el("button", { type: "button", on: { click: () => addRow({ input: "", output: "" }) } }, "+ instance"),
    el("div", { class: "actions" }, el("button", { type: "submit", class: "approve" }, "Save (Ctrl+Enter)"),
      el("button", { type: "button", on: { click: () => { state.editing = false; renderDetail(d, null); } } }, "Cancel (Esc)")),
    el("div", { id: "findings" }));
  $("#detail").replaceChildren(form);
  $("#edit-instruction").focus();
}

async function saveEdit() {
  const it = state.items[state.index];
  const instances = [...document.querySelectorAll("#edit-instances .inst-row")].map((r) => ({ input: r.querySelector(".in").value, output: r.querySelector(".out").value }));
  try {
    const res = await api(`/api/samples/${it.id}`, { method: "PATCH", json: { instruction: $("#edit-instruction").value, instances } });
    it.instruction = res.sample.instruction;
    refreshListItem(state.index);
    state.editing = false;
    state.detail = Object.assign(res.sample, { audit: state.detail.audit });
    renderDetail(state.detail, null);
    $("#detail").prepend(findingsBox(res.findings));
    toast(`#${it.id} saved`);
  } catch (e) { toast(e.message, true); }
}

function findingsBox(f) {
  const lines = [];
  if (f.instruction) lines.push(`instruction filter: ${f.instruction.reason}${f.instruction.detail ? " (" + f.instruction.detail + ")" : ""}`);
  if (f.instances.dropped.length) lines.push(`instances dropped: ${f.instances.dropped.join(", ")}`);
  if (f.similar) lines.push(`nearest kept: ${f.similar.score.toFixed(3)}${f.similar.over_threshold ? " — over the threshold" : ""} “${f.similar.instruction}”`);
  return el("div", { class: "findings " + (f.ok ? "ok" : "warn"), id: "findings" },
    el("strong", {}, f.ok ? "Filters pass the edited text." : "Filters flag the edited text:"), el("ul", {}, lines.map((l) => el("li", {}, l))));
}

// --- bulk and export -----------------------------------------------------------------------
async function bulk(action) {
  const f = filterOnly(readFilter());
  const filter = {};
  for (const [k, v] of Object.entries(f)) filter[k] = k === "status" ? [v] : ["score_min", "score_max"].includes(k) ? Number(v) : ["len_min", "len_max"].includes(k) ? parseInt(v, 10) : k === "classification" ? v === "true" : v;
  const count = $("#count").textContent || "all";
  if (!confirm(`${action} every sample matching this filter (${count})?`)) return;
  try {
    const r = await api("/api/samples/bulk", { method: "POST", json: { action, filter, all: Object.keys(filter).length === 0 } });
    toast(`${r.changed} ${r.status}${r.skipped ? `, ${r.skipped} skipped (duplicates)` : ""}`);
    applyFilter();
  } catch (e) { toast(e.message, true); }
}

async function exportJson() {
  try {
    const res = await api("/api/export?" + query(filterOnly(readFilter())), { raw: true });
    const blob = await res.blob();
    const name = (res.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/)?.[1] || "datagen.json";
    const a = el("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) { toast(e.message, true); }
}

// --- charts (inline SVG) ---------------------------------------------------------------------
function barChart(title, labels, values, opts = {}) {
  const W = opts.width || 460, H = 220, pad = { l: 44, r: 8, t: 8, b: opts.rotate ? 70 : 28 };
  // Whole-number ticks at a 1/2/5 x 10^n step, the axis topped at the last tick.
  const raw = Math.max(1, ...values) / 4, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw));
  const nticks = Math.ceil(Math.max(1, ...values) / step), max = nticks * step;
  const bw = (W - pad.l - pad.r) / Math.max(1, values.length);
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": title });
  for (let t = 0; t <= nticks; t++) {
    const y = H - pad.b - (H - pad.t - pad.b) * t / nticks;
    g.append(svg("line", { x1: pad.l, x2: W - pad.r, y1: y, y2: y, class: "grid" }), svg("text", { x: pad.l - 4, y: y + 4, "text-anchor": "end", class: "tick" }, (t * step).toLocaleString()));
  }
  values.forEach((v, i) => {
    const h = (H - pad.t - pad.b) * v / max, x = pad.l + i * bw;
    g.append(svg("rect", { x: x + 1, y: H - pad.b - h, width: Math.max(1, bw - 2), height: h, class: opts.cls ? opts.cls(i) : "bar" }, svg("title", {}, `${labels[i]}: ${v}`)));
    const every = Math.ceil(values.length / 10);
    if (i % every === 0 || opts.rotate) {
      const lx = x + bw / 2, ly = H - pad.b + 14;
      g.append(svg("text", opts.rotate ? { x: lx, y: ly, transform: `rotate(35 ${lx} ${ly})`, class: "tick" } : { x: lx, y: ly, "text-anchor": "middle", class: "tick" }, labels[i]));
    }
  });
  return el("figure", {}, el("figcaption", {}, title), g);
}

function verbChart(verbs) {
  const W = 940, row = 22, H = Math.max(60, verbs.length * row + 10), left = 90;
  const max = Math.max(1, ...verbs.map((v) => v.count));
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "leading verbs" });
  verbs.forEach((v, i) => {
    const y = 4 + i * row, w = (W - left - 380) * v.count / max;
    g.append(svg("text", { x: left - 6, y: y + 14, "text-anchor": "end", class: "label" }, v.verb),
      svg("rect", { x: left, y, width: Math.max(1, w), height: row - 6, class: "bar" }, svg("title", {}, `${v.verb}: ${v.count}`)),
      svg("text", { x: left + w + 6, y: y + 14, class: "tick" }, `${v.count}  → ${v.objects.map((o) => `${o.object} (${o.count})`).join(", ")}`));
  });
  return el("figure", { class: "wide" }, el("figcaption", {}, "Leading verbs and their most common objects"), g);
}

async function loadStats() {
  try {
    const s = await api("/api/stats?" + query(filterOnly(readFilter())));
    const st = Object.entries(s.by_status).sort((a, b) => b[1] - a[1]);
    const rs = Object.entries(s.by_reason).slice(0, 15);
    const bins = s.score_histogram.counts.map((_, i) => (i * s.score_histogram.bin_width).toFixed(2));
    const lbins = s.length_histogram.counts.map((_, i) => (i === s.length_histogram.counts.length - 1 ? "≥" : "") + i * s.length_histogram.bin_width);
    $("#charts").replaceChildren(
      barChart(`Samples by status (${s.total})`, st.map((x) => x[0]), st.map((x) => x[1]), { cls: (i) => "bar " + st[i][0] }),
      barChart("Filter rejections by reason", rs.map((x) => x[0]), rs.map((x) => x[1]), { rotate: true }),
      barChart("Nearest ROUGE-L", bins, s.score_histogram.counts),
      barChart("Instruction length (characters)", lbins, s.length_histogram.counts),
      verbChart(s.verbs),
      el("p", { class: "muted" }, `Verbs counted over the newest ${s.verbs_sampled} matching samples.`));
  } catch (e) { toast(e.message, true); }
}

// --- keyboard --------------------------------------------------------------------------------
function onKey(ev) {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
  if (state.editing) {
    if (ev.key === "Escape") { state.editing = false; renderDetail(state.detail, null); ev.preventDefault(); }
    else if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { saveEdit(); ev.preventDefault(); }
    return;
  }
  if (typing) {
    if (ev.key === "Escape") document.activeElement.blur();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || $("#queue-view").hidden) return;
  const keys = {
    j: () => select(state.index + 1), ArrowDown: () => select(state.index + 1),
    k: () => select(state.index - 1), ArrowUp: () => select(state.index - 1),
    a: () => review("approve"), r: () => review("reject"), e: startEdit,
    n: () => $("#note")?.focus(), "/": () => $("#search").focus(),
  };
  if (keys[ev.key]) { ev.preventDefault(); keys[ev.key](); }
}

// --- start -----------------------------------------------------------------------------------
function showTab(name) {
  $("#queue-view").hidden = name !== "queue";
  $("#stats-view").hidden = name !== "stats";
  $("#tab-queue").classList.toggle("active", name === "queue");
  $("#tab-stats").classList.toggle("active", name === "stats");
  if (name === "stats") loadStats();
}

function authState() { $("#auth-state").textContent = token() ? "token set" : "no token: read-only"; }

document.addEventListener("DOMContentLoaded", () => {
  $("#reviewer").value = reviewer();
  $("#reviewer").addEventListener("change", (e) => localStorage.setItem("datagen.reviewer", e.target.value.trim()));
  $("#reviewer").addEventListener("keydown", (e) => { if (e.key === "Enter") e.target.blur(); });
  $("#save-token").addEventListener("click", () => { sessionStorage.setItem("datagen.token", $("#token").value.trim()); $("#token").value = ""; authState(); toast("token kept for this tab"); });
  $("#token").addEventListener("keydown", (e) => { if (e.key === "Enter") { $("#save-token").click(); e.target.blur(); } });
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); applyFilter(); });
  // A changed select re-queries and gives the keyboard back to the queue (j/k/a/r/e).
  $("#filters").addEventListener("change", (e) => { if (e.target.tagName === "SELECT") { e.target.blur(); applyFilter(); } });
  $("#filters").addEventListener("submit", () => document.activeElement?.blur());
  $("#more").addEventListener("click", () => loadMore());
  $("#bulk-approve").addEventListener("click", () => bulk("approve"));
  $("#bulk-reject").addEventListener("click", () => bulk("reject"));
  $("#export").addEventListener("click", exportJson);
  $("#tab-queue").addEventListener("click", () => showTab("queue"));
  $("#tab-stats").addEventListener("click", () => showTab("stats"));
  document.addEventListener("keydown", onKey);
  authState();
  loadOptions().then(applyFilter);
});
