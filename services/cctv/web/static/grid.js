/* Camera grid: live tiles (MJPEG, or refreshed snapshots when there are many cameras) and a
   status line per tile from /api/v1/cameras. */
"use strict";
(function () {
  const grid = document.getElementById("grid");
  const known = (grid.dataset.cameras || "").split(",").filter(Boolean);
  const mode = grid.dataset.mode;

  for (const img of grid.querySelectorAll("img.live")) {
    if (mode === "mjpeg") { keepMjpeg(img); continue; }
    const cam = img.dataset.camera;
    const next = () => setTimeout(() => {
      img.src = `/api/v1/cameras/${encodeURIComponent(cam)}/snapshot.jpg?t=${Date.now()}`;
    }, 400);
    img.addEventListener("load", next);
    img.addEventListener("error", () => setTimeout(next, 2000));
    next();
  }

  async function refresh() {
    let data;
    try {
      const r = await fetch("/api/v1/cameras", {credentials: "same-origin"});
      if (r.status === 401) { location.href = "/login?next=/"; return; }
      data = await r.json();
    } catch (e) { return; }
    const names = data.cameras.map(c => c.camera);
    if (names.join(",") !== known.join(",")) { location.reload(); return; }
    for (const cam of data.cameras) {
      const tile = grid.querySelector(`.tile[data-camera="${CSS.escape(cam.camera)}"]`);
      if (!tile) continue;
      const b = tile.querySelector('[data-field="status"]');
      b.textContent = STATUS_TEXT[cam.status] || cam.status;
      b.className = `badge status ${STATUS_LEVEL[cam.status] || ""}`;
      tile.classList.toggle("bad", STATUS_LEVEL[cam.status] === "bad");
      const lat = cam.latency_ms ? cam.latency_ms.capture_to_result : null;
      tile.querySelector('[data-field="summary"]').textContent =
        `${fmt.num(cam.fps_in)} in · ${fmt.num(cam.fps_processed)} out fps · ${fmt.ms(lat)}`;
    }
  }
  if (known.length || mode) { refresh(); setInterval(refresh, 2000); }
})();
