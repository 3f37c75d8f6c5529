// Helpers both pages share (review dashboard and Jobs page). Text is untrusted: the DOM is built
// with createElement/textContent only (never innerHTML), and the CSP forbids inline code.
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

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
    try {
      const j = await res.json();
      detail = typeof j.detail === "string" ? j.detail : Array.isArray(j.detail) ? j.detail.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ") : JSON.stringify(j.detail);
    } catch (_) { /* not JSON */ }
    if (res.status === 401 || res.status === 403) detail = "token: " + detail;
    const err = new Error(`${res.status}: ${detail}`);
    err.status = res.status; err.detail = detail;
    throw err;
  }
  return opts.raw ? res : res.status === 204 ? null : res.json();
}
