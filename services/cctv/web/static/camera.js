/* Camera page: detections and stream figures as they happen (server-sent events). */
"use strict";
(function () {
  const root = document.getElementById("camera");
  const cam = root.dataset.camera;
  const log = document.getElementById("log");
  const current = document.getElementById("current");
  const meta = document.getElementById("meta");
  const status = document.getElementById("cam-status");
  const MAX_ROWS = 15;
  const live = document.getElementById("live");
  const paused = document.getElementById("paused");
  const toggle = document.getElementById("clean-toggle");
  keepMjpeg(live);
  if (live && toggle) {
    toggle.addEventListener("click", () => {
      const clean = toggle.getAttribute("aria-pressed") !== "true";
      toggle.setAttribute("aria-pressed", String(clean));
      toggle.textContent = clean ? "Show detections" : "Clean video";
      live.dataset.src = `/video/${encodeURIComponent(cam)}.mjpg${clean ? "?clean=1" : ""}`;
      live.src = live.dataset.src;
    });
  }

  function onState(s) {
    // detection paused: the picture goes on with raw frames until results come back
    if (paused) paused.hidden = !s.paused;
    root.classList.toggle("detection-paused", !!s.paused);
  }
  fillTable(log, [], "waiting for results…");

  function counts(dets) {
    const n = {};
    for (const d of dets) n[d.name] = (n[d.name] || 0) + 1;
    return Object.entries(n).sort((a, b) => b[1] - a[1]);
  }

  function onDetection(r) {
    const c = counts(r.dets);
    current.replaceChildren(...(c.length ? c.map(([name, k]) => el("span", {class: "chip"}, name, el("b", {}, k)))
                                         : [el("span", {class: "muted"}, "nothing detected")]));
    meta.textContent = `seq ${r.seq} · ${r.model} · ${fmt.num(r.infer_ms)} ms · epoch ${r.epoch} · ${r.worker}`;
    const body = log.tBodies[0];
    if (body.rows.length === 1 && body.rows[0].cells.length === 1) body.replaceChildren();
    const when = r.done ? new Date(r.done / 1000).toLocaleTimeString() : "–";
    const tr = el("tr", {class: "new"},
      el("td", {}, when), el("td", {class: "num"}, r.seq),
      el("td", {}, c.map(([name, k]) => `${k} ${name}`).join(", ") || "–"),
      el("td", {class: "num"}, fmt.ms(r.latency_ms.capture_to_result)),
      el("td", {class: "num"}, fmt.ms(r.infer_ms)),
      el("td", {class: "num"}, r.epoch));
    body.prepend(tr);
    while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
  }

  function card(id, text, bad) {
    const c = document.getElementById(id);
    c.querySelector(".value").textContent = text;
    c.classList.toggle("bad", !!bad);
  }

  function onStats(s) {
    if (!s || !s.latency_ms) return;
    status.textContent = STATUS_TEXT[s.status] || s.status;
    status.className = `badge ${STATUS_LEVEL[s.status] || ""}`;
    card("c-fps_in", fmt.num(s.fps_in), s.silent);
    card("c-fps_processed", fmt.num(s.fps_processed), s.status === "no_results");
    card("c-fps_skipped", fmt.num(s.fps_skipped));
    card("c-latency", fmt.ms(s.latency_ms.capture_to_result));
    card("c-ingest", fmt.ms(s.latency_ms.ingest_to_result));
    card("c-infer", fmt.ms(s.latency_ms.inference));
    card("c-lag", fmt.int(s.consumer_lag), s.lag_growing);
    card("c-pending", fmt.int(s.pending));
    card("c-age", fmt.age(s.last_frame_age_s), s.silent);
    const rows = Object.entries(s.counters).map(([k, v]) => [k.replace("_", " "), {v, cls: "num"}]);
    for (const [k, v] of Object.entries(s.drops)) rows.push([`dropped ${k}`, {v, cls: "num"}]);
    fillTable(document.getElementById("counters"), rows);
  }

  follow(`/api/v1/cameras/${encodeURIComponent(cam)}/stream`,
         {detection: onDetection, stats: onStats, state: onState}, document.getElementById("conn"));
})();
