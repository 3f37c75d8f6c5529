// datagen review dashboard. Vanilla JS, no build. Generated text is untrusted: the DOM is
// built with createElement/textContent only (never innerHTML), and the CSP forbids inline code.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// --- state ---------------------------------------------------------------------------------
const state = {
  items: [], cursor: null, index: -1, detail: null, editing: false, filter: {},
  chain: Promise.resolve(), // reviews and moves run one after another, in key-press order
  undo: [], // ids of this tab's reviews, newest last (u undoes them one by one)
  picked: new Set(), // ids ticked for a bulk action
  progress: null, // {count, capped, reviewed} of the current filter
};
const REVIEWED = ["approved", "discarded"];

// Each key press or click becomes one step, run after the previous one finished: three fast
// `a` presses approve three samples, each read when its turn comes, never one sample thrice.
function enqueue(step) {
  state.chain = state.chain.then(step).catch((e) => toast(e.message, true));
  return state.chain;
}

// Generated text may hide characters that reorder or vanish on screen (U+202E shows
// "invoice\u202Efdp.exe" as "invoiceexe.pdf"). Show each as a visible marker instead.
const INVISIBLE = /[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;
const INVISIBLE_NAMES = {
  0x200b: "ZERO WIDTH SPACE", 0x200c: "ZERO WIDTH NON-JOINER", 0x200d: "ZERO WIDTH JOINER", 0x200e: "LEFT-TO-RIGHT MARK",
  0x200f: "RIGHT-TO-LEFT MARK", 0x202a: "LEFT-TO-RIGHT EMBEDDING", 0x202b: "RIGHT-TO-LEFT EMBEDDING", 0x202c: "POP DIRECTIONAL FORMATTING",
  0x202d: "LEFT-TO-RIGHT OVERRIDE", 0x202e: "RIGHT-TO-LEFT OVERRIDE", 0x2060: "WORD JOINER", 0x2066: "LEFT-TO-RIGHT ISOLATE",
  0x2067: "RIGHT-TO-LEFT ISOLATE", 0x2068: "FIRST STRONG ISOLATE", 0x2069: "POP DIRECTIONAL ISOLATE", 0xfeff: "ZERO WIDTH NO-BREAK SPACE (BOM)",
};

function codePoint(ch) { return "U+" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0"); }

function visible(text) {
  const out = [];
  let last = 0;
  const s = String(text ?? "");
  for (const m of s.matchAll(INVISIBLE)) {
    if (m.index > last) out.push(document.createTextNode(s.slice(last, m.index)));
    const cp = codePoint(m[0]);
    out.push(el("span", { class: "invis", title: `${cp} ${INVISIBLE_NAMES[m[0].codePointAt(0)] || "invisible character"}` }, cp));
    last = m.index + m[0].length;
  }
  if (last < s.length || !out.length) out.push(document.createTextNode(s.slice(last)));
  return out;
}

function hiddenChars(d) {
  const all = [d.instruction, ...d.instances.flatMap((x) => [x.input, x.output])].join("\n");
  return [...new Set((all.match(INVISIBLE) || []).map(codePoint))];
}

// --- filters and the URL -------------------------------------------------------------------
// The filter and the current sample live in the address (?status=rejected&sample=42), so a
// reload keeps the place and a link shows a colleague the same sample.
// The filter's fields and their types come from the server's one declaration (GET /api/filters).
let FILTER_TYPES = {};
const filterKeys = () => [...Object.keys(FILTER_TYPES), "sort"];

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

function writeUrl() {
  const id = state.items[state.index]?.id;
  const qs = query(state.filter, id ? { sample: id } : {});
  const url = location.pathname + (qs ? "?" + qs : "");
  if (url !== location.pathname + location.search) history.replaceState(null, "", url);
}

function readUrl() {
  const p = new URLSearchParams(location.search);
  for (const k of filterKeys()) {
    const field = $(`#filters [name=${k}]`);
    const v = p.get(k);
    if (!field || v === null) continue;
    if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === v)) field.append(el("option", { value: v }, v));
    field.value = v;
  }
  const id = parseInt(p.get("sample"), 10);
  return Number.isFinite(id) && id > 0 ? id : null;
}

async function loadOptions() {
  try {
    const [runs, reasons, keys, types] = await Promise.all([api("/api/runs"), api("/api/reasons"), api("/api/scores/keys"), api("/api/filters")]);
    FILTER_TYPES = types;
    const bySel = $("#filters [name=by]");
    for (const k of keys) bySel.append(el("option", { value: k.key }, `${k.key} (${k.count})`));
    const runSel = $("#filters [name=run]");
    for (const r of runs) runSel.append(el("option", { value: r.name }, `${r.name} (${r.lang}, ${r.kept} kept)`));
    const reasonSel = $("#filters [name=reason]");
    for (const r of reasons) reasonSel.append(el("option", { value: r }, r));
  } catch (e) { toast(e.message, true); }
}

const FIND_PAGES = 20; // a linked sample further down than 2,000 rows is shown on its own

async function applyFilter(wantId) {
  const gen = state.gen = (state.gen || 0) + 1; // a newer filter makes older answers moot
  state.filter = readFilter();
  state.items = []; state.cursor = null; state.index = -1;
  state.picked.clear(); pickedChanged();
  $("#list").replaceChildren();
  await loadMore(gen);
  let at = wantId ? state.items.findIndex((x) => x.id === wantId) : 0;
  for (let n = 0; wantId && at < 0 && state.cursor && n < FIND_PAGES && gen === state.gen; n++) {
    await loadMore(gen);
    at = state.items.findIndex((x) => x.id === wantId);
  }
  if (gen !== state.gen) return;
  if (at >= 0 && state.items.length) select(at);
  else if (wantId) showAlone(wantId);
  else { writeUrl(); $("#detail").replaceChildren(el("p", { class: "muted" }, "Nothing matches this filter.")); }
  refreshCount(gen);
  if (!$("#stats-view").hidden) loadStats();
}

async function refreshCount(gen) {
  const c = await api("/api/samples/count?" + query(filterOnly(state.filter))).catch(() => null);
  if (gen !== undefined && gen !== state.gen) return;
  state.progress = c;
  showProgress();
}

function showProgress() {
  const c = state.progress;
  $("#count").textContent = c ? `${c.reviewed.toLocaleString("en-US")} of ${c.count.toLocaleString("en-US")}${c.capped ? "+" : ""} reviewed` : "";
}

function countReview(oldStatus, newStatus) {
  if (!state.progress) return;
  state.progress.reviewed += (REVIEWED.includes(newStatus) ? 1 : 0) - (REVIEWED.includes(oldStatus) ? 1 : 0);
  showProgress();
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
  const pick = el("input", { type: "checkbox", class: "pick", title: "select for a bulk action (x)", "aria-label": `select #${it.id}`, checked: state.picked.has(it.id) });
  pick.addEventListener("click", (ev) => { ev.stopPropagation(); togglePick(it.id, pick.checked); pick.blur(); });
  return el("li", { "data-i": i, "data-id": it.id, on: { click: () => enqueue(() => select(i)) } },
    pick,
    badge(it.status),
    el("span", { class: "id" }, "#" + it.id),
    it.nearest_score !== null ? el("span", { class: "score", title: "nearest ROUGE-L" }, it.nearest_score.toFixed(2)) : null,
    el("span", { class: "text" }, visible(it.instruction)),
    // One column per score key: the chosen one (Score filter) first, the others after it.
    Object.entries(it.scores || {}).sort(([a], [b]) => (b === state.filter.by) - (a === state.filter.by) || a.localeCompare(b))
      .map(([k, v]) => el("span", { class: "qscore" + (k === state.filter.by ? " by" : ""), title: k, "data-key": k }, shortKey(k) + " " + fmtScore(v))));
}

function shortKey(k) { return k.split("@")[0]; }
function fmtScore(v) { return Number.isInteger(v) ? String(v) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2).replace(/0$/, ""); }

// The judge's verdict beside the buttons: a suggestion, never an action; its reason is model text (escaped).
function judgeSuggestion(d) {
  const j = (d.scores || []).filter((s) => s.scorer === "judge" && s.value !== null);
  if (!j.length) return null;
  return el("span", { class: "suggest", id: "judge-suggest" }, j.map((s) => el("span", { class: "verdict " + s.suggest, title: s.key },
    `judge ${s.rubric} ${fmtScore(s.value)} → ${s.suggest}`, s.reason ? el("span", { class: "why" }, " — ", visible(s.reason)) : null)));
}

function scoreRows(d) {
  return (d.scores || []).map((s) => [el("dt", {}, shortKey(s.key)), el("dd", { class: "score-row", title: s.key },
    s.value === null ? el("span", { class: "warn" }, "failed: " + (s.error || "")) : fmtScore(s.value),
    s.value !== null && s.reason ? el("span", { class: "muted" }, " — ", visible(s.reason)) : s.value === null && s.reason ? el("span", { class: "muted" }, " — answer: ", visible(s.reason)) : null)]);
}

function refreshListItem(i) {
  const old = $(`#list li[data-i="${i}"]`);
  if (old) { const fresh = listItem(state.items[i], i); if (i === state.index) fresh.classList.add("current"); old.replaceWith(fresh); }
}

function togglePick(id, on) {
  if (on === undefined) on = !state.picked.has(id);
  if (on) state.picked.add(id); else state.picked.delete(id);
  const box = $(`#list li[data-id="${id}"] .pick`);
  if (box) box.checked = on;
  pickedChanged();
}

function pickedChanged() {
  const n = state.picked.size;
  $("#bulk-approve").textContent = n ? `Approve selected (${n})` : "Approve all";
  $("#bulk-reject").textContent = n ? `Reject selected (${n})` : "Reject all";
  $("#clear-picks").hidden = !n;
}

// --- one sample ----------------------------------------------------------------------------
function select(i) {
  if (i < 0 || i >= state.items.length) return;
  state.index = i; state.editing = false; state.alone = null;
  for (const li of document.querySelectorAll("#list li.current")) li.classList.remove("current");
  const li = $(`#list li[data-i="${i}"]`);
  if (li) { li.classList.add("current"); li.scrollIntoView({ block: "nearest" }); }
  writeUrl();
  showDetail(state.items[i].id);
}

async function showDetail(id) {
  try {
    const d = await api(`/api/samples/${id}`);
    if (state.items[state.index]?.id !== id && state.alone !== id) return; // the reviewer moved on meanwhile
    state.detail = d;
    renderDetail(d, null);
    const sim = await api(`/api/samples/${id}/similar?k=5`).catch(() => []);
    if (state.detail === d && !state.editing) renderDetail(d, sim);
  } catch (e) { toast(e.message, true); }
}

// A linked sample that the filter does not list (or lists too far down): shown, not navigable.
function showAlone(id) {
  state.alone = id;
  showDetail(id).then(() => $("#detail").prepend(el("p", { class: "muted" }, `#${id} is not in the first ${state.items.length} rows of this filter; j/k walk the list.`)));
}

// j at the last loaded row fetches the next page first.
async function next() {
  if (state.index + 1 >= state.items.length && state.cursor) await loadMore();
  if (state.index + 1 < state.items.length) select(state.index + 1);
  else if (state.index >= 0) { showDetail(state.items[state.index].id); toast("end of the list"); }
}

function pieces(parts) {
  return parts.map(([text, shared]) => shared ? el("mark", {}, visible(text)) : visible(text));
}

function compare(title, a, b, score) {
  return el("div", { class: "compare" },
    el("h3", {}, title, score !== null && score !== undefined ? el("span", { class: "score" }, " ROUGE-L " + Number(score).toFixed(3)) : null),
    el("div", { class: "pair" },
      el("div", { class: "side" }, el("div", { class: "label" }, "this sample"), el("p", {}, a)),
      el("div", { class: "side" }, el("div", { class: "label" }, "neighbour"), el("p", {}, b))));
}

function auditEntry(a) {
  const head = `${a.at.replace("T", " ").slice(0, 19)} ${a.actor} ${a.action}${a.note ? " — " + a.note : ""}`;
  let before = null, after = null;
  try { before = JSON.parse(a.before); after = JSON.parse(a.after); } catch (_) { /* a status, not a snapshot */ }
  if (!before || typeof before !== "object" || !after || typeof after !== "object") {
    return el("li", {}, head, a.before || a.after ? el("span", { class: "muted" }, `  ${a.before ?? "—"} → ${a.after ?? "—"}`) : null);
  }
  const rows = [];
  if (before.instruction !== after.instruction) rows.push(["instruction", before.instruction, after.instruction]);
  const inst = (x) => (x.instances || []).map((i, n) => `${n + 1}. ${i.input ? "input: " + i.input + "\n   " : ""}output: ${i.output}`).join("\n");
  if (inst(before) !== inst(after)) rows.push(["instances", inst(before), inst(after)]);
  return el("li", {}, head, rows.length ? el("table", { class: "diff" },
    el("tr", {}, el("th", {}, ""), el("th", {}, "before"), el("th", {}, "after")),
    rows.map(([what, b, c]) => el("tr", {}, el("td", { class: "label" }, what), el("td", { class: "before" }, visible(b)), el("td", { class: "after" }, visible(c))))) : el("span", { class: "muted" }, "  (no change)"));
}

function renderDetail(d, similar) {
  const hidden = hiddenChars(d);
  const meta = el("dl", { class: "meta" },
    el("dt", {}, "status"), el("dd", {}, badge(d.status)),
    d.reason ? [el("dt", {}, "reason"), el("dd", {}, visible(d.reason + (d.detail ? ` — ${d.detail}` : "")))] : null,
    hidden.length ? [el("dt", {}, "invisible characters"), el("dd", { class: "warn", id: "hidden-chars" }, hidden.join(" "))] : null,
    el("dt", {}, "run"), el("dd", {}, `${d.run} · ${d.lang} · #${d.id}`),
    el("dt", {}, "classification"), el("dd", {}, d.is_classification === null ? "unknown" : d.is_classification ? "yes" : "no"),
    el("dt", {}, "length"), el("dd", {}, `${d.length} chars`),
    d.nearest_score !== null ? [el("dt", {}, "nearest ROUGE-L"), el("dd", {}, d.nearest_score.toFixed(3))] : null,
    scoreRows(d),
    d.reviewed_by ? [el("dt", {}, "reviewed by"), el("dd", {}, visible(d.reviewed_by + (d.review_note ? ` — “${d.review_note}”` : "")))] : null);

  const instances = el("ol", { class: "instances" }, d.instances.map((x) =>
    el("li", {}, x.input ? el("div", { class: "input" }, el("span", { class: "label" }, "input "), visible(x.input)) : null,
      el("div", { class: "output" }, el("span", { class: "label" }, "output "), visible(x.output)))));

  const blocks = [];
  if (d.nearest && d.nearest_highlight) blocks.push(compare("Nearest kept instruction when it was filtered", pieces(d.nearest_highlight.a), pieces(d.nearest_highlight.b), d.nearest_score));
  if (similar && similar.length) {
    const top = similar[0];
    if (!d.nearest) blocks.push(compare("Most similar kept instruction", pieces(top.highlight.a), pieces(top.highlight.b), top.score));
    blocks.push(el("div", { class: "similar" }, el("h3", {}, "Similar kept instructions"),
      el("ol", {}, similar.map((s) => el("li", {}, el("span", { class: "score" }, s.score.toFixed(3)), " ", el("span", {}, visible(s.instruction)), el("span", { class: "muted" }, ` #${s.id}`))))));
  } else if (similar) blocks.push(el("p", { class: "muted" }, "No similar kept instructions in this run."));

  const req = d.request ? el("details", { class: "request" }, el("summary", {}, `Request #${d.request.id} (${d.request.stage}, ${d.request.model})`),
    el("h4", {}, "prompt"), el("pre", {}, visible(d.request.prompt)), el("h4", {}, "response"), el("pre", {}, visible(d.request.response))) : null;
  const audit = d.audit && d.audit.length ? el("details", { class: "audit", open: true }, el("summary", {}, `History (${d.audit.length})`),
    el("ul", {}, d.audit.map(auditEntry))) : null;

  $("#detail").replaceChildren(
    el("div", { class: "actions" },
      el("button", { type: "button", class: "approve", on: { click: () => enqueue(() => review("approve")) } }, "Approve (a)"),
      el("button", { type: "button", class: "reject", on: { click: () => enqueue(() => review("reject")) } }, "Reject (r)"),
      el("button", { type: "button", on: { click: startEdit } }, "Edit (e)"),
      el("input", { id: "note", placeholder: "note (n)", maxlength: 2000 }),
      judgeSuggestion(d)),
    el("p", { class: "instruction", id: "instruction" }, visible(d.instruction)),
    ...[meta, el("h3", {}, `Instances (${d.instances.length})`), instances, ...blocks, req, audit].filter(Boolean));
}

async function review(action) {
  const i = state.index, it = state.items[i];
  if (!it) return;
  const note = ($("#note")?.value || "").trim();
  const body = note ? { note } : {};
  // Approving what the filters rejected is allowed, but only on purpose.
  if (action === "approve" && it.status === "rejected") {
    if (!confirm(`The filters rejected #${it.id} (${it.reason || "a filter"}). Approve it anyway?`)) return;
    body.force = true;
  }
  let r;
  try {
    r = await api(`/api/samples/${it.id}/${action}`, { method: "POST", json: body });
  } catch (e) {
    if (e.status !== 409 || body.force || !/force/.test(e.detail || "")) throw e;
    if (!confirm(`${e.detail}\n\nApprove #${it.id} anyway?`)) return;
    r = await api(`/api/samples/${it.id}/${action}`, { method: "POST", json: Object.assign(body, { force: true }) });
  }
  countReview(it.status, r.status);
  it.status = r.status; it.reviewed_by = r.reviewed_by;
  state.undo.push(it.id);
  refreshListItem(i);
  toast(`#${it.id} ${r.status} (u undoes)`);
  if (state.index === i) await next();
}

async function undo() {
  const id = state.undo.pop();
  if (id === undefined) { toast("nothing to undo in this tab"); return; }
  const r = await api(`/api/samples/${id}/undo`, { method: "POST", json: {} });
  const i = state.items.findIndex((x) => x.id === id);
  if (i >= 0) {
    countReview(state.items[i].status, r.status);
    state.items[i].status = r.status;
    refreshListItem(i);
    select(i);
  }
  toast(`#${id} back to ${r.status}`);
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
    const fresh = await api(`/api/samples/${it.id}`).catch(() => null); // with the new audit entry
    state.detail = fresh || Object.assign(res.sample, { audit: state.detail.audit });
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
    el("strong", {}, f.ok ? "Filters pass the edited text." : "Filters flag the edited text:"), el("ul", {}, lines.map((l) => el("li", {}, visible(l)))));
}

// --- bulk and export -----------------------------------------------------------------------
async function bulk(action) {
  const picked = [...state.picked];
  const f = filterOnly(readFilter());
  const filter = {};
  const as = { array: (v) => [v], number: Number, integer: (v) => parseInt(v, 10), boolean: (v) => v === "true" };
  for (const [k, v] of Object.entries(f)) filter[k] = (as[FILTER_TYPES[k]] || String)(v);
  const what = picked.length ? `the ${picked.length} selected samples` : `every sample matching this filter (${state.progress ? state.progress.count + (state.progress.capped ? "+" : "") : "all"})`;
  if (!confirm(`${action} ${what}?`)) return;
  const json = picked.length ? { action, ids: picked } : { action, filter, all: Object.keys(filter).length === 0 };
  try {
    const r = await api("/api/samples/bulk", { method: "POST", json });
    toast(`${r.changed} ${r.status}${r.skipped ? `, ${r.skipped} skipped (duplicates)` : ""}`);
    await applyFilter(state.items[state.index]?.id);
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
      ...(s.score_histograms || []).map((h) => barChart(`Score ${h.key} (${h.total})`,
        h.counts.map((_, i) => fmtScore(h.start + i * h.bin_width)), h.counts)),
      ...[agreementTable(s.judge_agreement || [])].filter(Boolean),
      verbChart(s.verbs),
      el("p", { class: "muted" }, `Verbs counted over the newest ${s.verbs_sampled} matching samples.`));
  } catch (e) { toast(e.message, true); }
}

function agreementTable(rows) {
  if (!rows.length) return null;
  const pct = (r) => r.rate === null ? "—" : (100 * r.rate).toFixed(0) + " %";
  return el("figure", { class: "wide", id: "agreement" }, el("figcaption", {}, "Reviewers and the judge: approved at or above the threshold, rejected below"),
    el("table", { class: "agreement" },
      el("tr", {}, ["run", "judge", "threshold", "reviewed", "agreed", "approved ≥", "approved <", "rejected ≥", "rejected <"].map((h) => el("th", {}, h))),
      rows.map((r) => el("tr", {}, [r.run, r.key, r.threshold, r.reviewed, `${r.agreed} (${pct(r)})`, r.approved_at_or_above, r.approved_below,
        r.rejected_at_or_above, r.rejected_below].map((c) => el("td", {}, String(c)))))));
}

// --- keyboard --------------------------------------------------------------------------------
const KEYS = [
  ["j / ↓", "next sample (loads more at the end of the list)"],
  ["k / ↑", "previous sample"],
  ["a", "approve (asks first when the filters rejected it)"],
  ["r", "reject"],
  ["u", "undo this tab's last review"],
  ["x", "select the sample for a bulk action"],
  ["e", "edit (Ctrl+Enter saves, Esc cancels)"],
  ["n", "write a note for the next review"],
  ["/", "search instructions, inputs and outputs"],
  ["?", "this list"],
  ["Esc", "close this list, leave a text field"],
];

function toggleHelp(show) {
  const h = $("#help");
  h.hidden = show === undefined ? !h.hidden : !show;
}

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
  if (ev.key === "Escape" && !$("#help").hidden) { toggleHelp(false); ev.preventDefault(); return; }
  if (ev.key === "?") { toggleHelp(); ev.preventDefault(); return; }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || $("#queue-view").hidden) return;
  const keys = {
    j: next, ArrowDown: next,
    k: () => select(state.index - 1), ArrowUp: () => select(state.index - 1),
    a: () => review("approve"), r: () => review("reject"), u: undo,
    x: () => { const it = state.items[state.index]; if (it) togglePick(it.id); },
  };
  const now = {
    e: startEdit, n: () => $("#note")?.focus(), "/": () => $("#search").focus(),
  };
  if (keys[ev.key]) { ev.preventDefault(); enqueue(keys[ev.key]); }
  else if (now[ev.key]) { ev.preventDefault(); now[ev.key](); }
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
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); enqueue(() => applyFilter()); });
  // A changed select re-queries and gives the keyboard back to the queue (j/k/a/r/e).
  $("#filters").addEventListener("change", (e) => { if (e.target.tagName === "SELECT") { e.target.blur(); enqueue(() => applyFilter()); } });
  $("#filters").addEventListener("submit", () => document.activeElement?.blur());
  $("#more").addEventListener("click", () => enqueue(() => loadMore()));
  $("#bulk-approve").addEventListener("click", () => enqueue(() => bulk("approve")));
  $("#bulk-reject").addEventListener("click", () => enqueue(() => bulk("reject")));
  $("#clear-picks").addEventListener("click", () => { for (const id of [...state.picked]) togglePick(id, false); });
  $("#export").addEventListener("click", exportJson);
  $("#tab-queue").addEventListener("click", () => showTab("queue"));
  $("#tab-stats").addEventListener("click", () => showTab("stats"));
  $("#help-button").addEventListener("click", () => toggleHelp());
  $("#help").addEventListener("click", (e) => { if (e.target.id === "help") toggleHelp(false); });
  $("#help-keys").replaceChildren(...KEYS.map(([k, what]) => el("tr", {}, el("td", {}, el("kbd", {}, k)), el("td", {}, what))));
  document.addEventListener("keydown", onKey);
  authState();
  enqueue(async () => { await loadOptions(); const want = readUrl(); await applyFilter(want); });
});
