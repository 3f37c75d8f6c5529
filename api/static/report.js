// datagen Report page: pick a run (and another to compare), show the report datagen renders
// (GET /api/report.html, the same page `datagen report --out` writes) in a sandboxed srcdoc frame.
// Run names are untrusted text: options are built with textContent only.
"use strict";

function params() {
  const q = new URLSearchParams(location.search);
  return { run: q.get("run") || "", vs: q.get("vs") || "" };
}

async function loadRuns() {
  const runs = await api("/api/runs");
  const { run, vs } = params();
  const names = runs.map((r) => r.name);
  $("#report-run").replaceChildren(...names.map((n) => el("option", { value: n, selected: n === run }, n)));
  $("#report-vs").replaceChildren(el("option", { value: "" }, "(none)"), ...names.map((n) => el("option", { value: n, selected: n === vs }, n)));
  if (!names.length) $("#report-state").textContent = "no runs in this database";
}

async function show() {
  const { run, vs } = params();
  if (!run) return;
  const q = new URLSearchParams({ run });
  if (vs) q.set("vs", vs);
  $("#report-state").textContent = "computing the report...";
  try {
    const res = await api("/api/report.html?" + q.toString(), { raw: true });
    $("#report-frame").srcdoc = await res.text();
    $("#report-state").textContent = vs ? `${run} against ${vs}` : run;
  } catch (e) {
    $("#report-frame").srcdoc = "";
    $("#report-state").textContent = e.detail || e.message;
    toast(e.message, true);
  }
}

$("#report-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = new URLSearchParams({ run: $("#report-run").value });
  if ($("#report-vs").value) q.set("vs", $("#report-vs").value);
  history.pushState(null, "", "/report?" + q.toString());
  show();
});
window.addEventListener("popstate", () => { loadRuns(); show(); });

$("#save-token").addEventListener("click", () => {
  const v = $("#token").value.trim();
  if (v) sessionStorage.setItem("datagen.token", v); else sessionStorage.removeItem("datagen.token");
  $("#token").value = "";
  $("#auth-state").textContent = token() ? "token set" : "read-only";
  loadRuns().catch((e) => toast(e.message, true));
});
$("#auth-state").textContent = token() ? "token set" : "read-only";
loadRuns().then(show).catch((e) => toast(e.message, true));
