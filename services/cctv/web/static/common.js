/* Shared helpers of the cctv-swarm pages (no framework, no external code). */
"use strict";

/** Create an element: el("td", {class: "num"}, "12", otherNode). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Replace the rows of a table body; rows are arrays of cells (strings, nodes or {v, cls}). */
function fillTable(table, rows, emptyText, rowClass) {
  const body = table.tBodies[0];
  const cols = table.tHead ? table.tHead.rows[0].cells.length : 1;
  if (!rows.length) {
    body.replaceChildren(el("tr", {}, el("td", {class: "muted", colspan: cols}, emptyText || "none")));
    return;
  }
  body.replaceChildren(...rows.map((cells, i) => {
    const tr = el("tr", {class: rowClass ? rowClass(i) : null});
    for (const c of cells) {
      if (c && typeof c === "object" && !(c instanceof Node)) tr.append(el("td", {class: c.cls}, c.v));
      else tr.append(el("td", {}, c));
    }
    return tr;
  }));
}

const fmt = {
  num(v, digits = 1) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); },
  int(v) { return v === null || v === undefined ? "–" : String(Math.round(v)); },
  ms(v) { return v === null || v === undefined ? "–" : `${Math.round(v)} ms`; },
  age(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return "now";
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    return `${Math.round(s / 3600)} h ago`;
  },
  dur(s) {
    if (s === null || s === undefined) return "–";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  },
  time(ms) { return ms ? new Date(ms).toLocaleTimeString() : "–"; },
};

function badge(text, level) { return el("span", {class: `badge ${level || ""}`}, text); }

const STATUS_LEVEL = {ok: "ok", silent: "bad", lagging: "bad", no_results: "warn", unknown: ""};
const STATUS_TEXT = {ok: "live", silent: "silent", lagging: "lag growing", no_results: "no results", unknown: "…"};

/**
 * Follow a server-sent event stream; handlers maps event names to functions. The browser
 * reconnects by itself; a stream closed because the login expired sends us to the login page.
 */
function follow(url, handlers, connEl) {
  const src = new EventSource(url);
  const show = (text, level) => { if (connEl) { connEl.textContent = text; connEl.className = `muted conn ${level || ""}`; } };
  src.onopen = () => show("live");
  src.onerror = async () => {
    show("reconnecting…");
    try {
      const r = await fetch("/api/v1/me", {credentials: "same-origin"});
      if (r.status === 401) { src.close(); location.href = "/login?next=" + encodeURIComponent(location.pathname); }
    } catch (e) { /* offline: EventSource keeps trying */ }
  };
  for (const [name, fn] of Object.entries(handlers)) {
    src.addEventListener(name, ev => { try { fn(JSON.parse(ev.data)); } catch (e) { console.error(e); } });
  }
  return src;
}

/** Re-open an MJPEG <img> when its stream ends (web restarted, network blip). */
function keepMjpeg(img) {
  if (!img || !img.getAttribute("src")) return;
  // data-src: the stream the page chose last (the camera page switches annotated / clean)
  img.addEventListener("error", () => setTimeout(() => {
    const base = img.dataset.src || img.getAttribute("src").split(/[?&]r=/)[0];
    img.src = `${base}${base.includes("?") ? "&" : "?"}r=${Date.now()}`;
  }, 2000));
}
