/* Cluster dashboard: rendered from the snapshot the server pushes every second. */
"use strict";
(function () {
  const $ = id => document.getElementById(id);
  const LEVEL = {critical: "bad", warning: "warn"};

  function setCard(id, value, sub, level) {
    const c = $(id);
    c.querySelector(".value").textContent = value;
    c.querySelector(".sub").textContent = sub || "";
    c.classList.toggle("bad", level === "bad");
    c.classList.toggle("ok", level === "ok");
  }

  function render(s) {
    // alerts: the red states first
    const alerts = s.alerts || [];
    $("alerts").replaceChildren(...(alerts.length
      ? alerts.map(a => el("div", {class: `alert ${a.level}`, "data-code": a.code}, a.message))
      : [el("div", {class: "alert allgood"}, "All good: a leader, a warm standby, every camera live")]));

    const L = s.leader;
    const shards = s.shards || [];
    const sharded = shards.length > 1;
    if (sharded) {
      // several shards: how many are led, and who leads which
      const led = shards.filter(x => x.leader);
      const by = {};
      for (const x of led) (by[x.leader] = by[x.leader] || []).push(x.shard);
      setCard("s-leader", `${led.length} / ${shards.length} shards led`,
              Object.entries(by).map(([id, ks]) => `${id}: ${ks.join(",")}`).join(" · ") || "no replica holds a lease",
              led.length === shards.length ? "ok" : "bad");
    } else {
      setCard("s-leader", L ? L.id : "NO LEADER",
              L ? `on ${L.node || "?"} · epoch ${L.epoch} · leading for ${fmt.dur(L.lease_age_s)} · lease ${L.lease_ttl_ms} ms left` : "no replica holds the lease",
              L ? "ok" : "bad");
    }
    fillTable($("shards"), shards.map(x => [
      {v: x.shard, cls: "num"}, x.leader ? el("span", {class: "mono"}, x.leader) : badge("no leader", "bad"),
      x.node || "–", {v: fmt.int(x.epoch), cls: "num"}, {v: fmt.ms(x.lease_ttl_ms), cls: "num"},
      x.cameras ? (x.cameras.join(", ") || "–") : "every camera",
    ]), "no shard", i => (shards[i].leader ? null : "bad"));
    const sb = s.standbys || [];
    setCard("s-standby", sb.length ? sb.map(r => r.id).join(", ") : "NONE",
            sb.length ? sb.map(r => `on ${r.node} · beat ${fmt.age(r.age_s)}`).join("; ") : "no warm standby",
            sb.length ? "ok" : "bad");
    const cams = s.cameras || [];
    const badCams = cams.filter(c => STATUS_LEVEL[c.status] === "bad");
    setCard("s-cameras", `${cams.length - badCams.length} / ${cams.length} live`,
            badCams.length ? badCams.map(c => `${c.camera}: ${STATUS_TEXT[c.status]}`).join(", ") : "",
            badCams.length ? "bad" : (cams.length ? "ok" : null));
    const ing = s.ingest || {};
    setCard("s-ingest", `${fmt.num(ing.accepted_per_s)} frames/s`,
            `${fmt.num(ing.requests_per_s)} requests/s · ${fmt.num(ing.errors_per_s)} errors/s · ${(ing.instances || []).length} instances`,
            null);
    const R = s.redis || {};
    const reps0 = R.replicas || [];
    setCard("s-redis", R.ok ? `${R.used_memory_human}` : "UNREACHABLE",
            R.ok ? `primary ${R.primary || "?"} · ${reps0.length ? `${reps0.filter(r => r.state === "online").length}/${reps0.length} replicas online` : "no replica"} · ${R.connected_clients} clients · ${R.ops_per_sec} ops/s · v${R.version}` : (R.error || ""),
            R.ok ? null : "bad");
    // Redis itself: the primary, each replica, each Sentinel (with CCTV_REDIS_SENTINELS)
    const rrows = [];
    if (R.ok) {
      rrows.push({cells: [el("span", {class: "mono"}, R.primary || "?"), badge("primary", "ok"),
                          R.good_replicas === null || R.good_replicas === undefined ? "" : `${R.good_replicas} good replicas`,
                          {v: fmt.int(R.repl_offset), cls: "num"}], bad: false});
      for (const r of reps0) {
        rrows.push({cells: [el("span", {class: "mono"}, r.addr), badge(`replica · ${r.state}`, r.state === "online" ? "" : "bad"),
                            r.lag_s === null || r.lag_s === undefined ? "" : `lag ${r.lag_s} s`,
                            {v: fmt.int(r.offset), cls: "num"}], bad: r.state !== "online"});
      }
    }
    for (const t of s.sentinels || []) {
      rrows.push({cells: [el("span", {class: "mono"}, t.addr),
                          badge(t.ok ? (t.down ? "sentinel · primary down" : "sentinel") : "sentinel · unreachable", t.ok && !t.down ? "" : "bad"),
                          t.ok ? `sees ${t.primary} · ${t.other_sentinels} other sentinels · quorum ${t.quorum}` : (t.error || ""),
                          ""], bad: !t.ok || t.down});
    }
    fillTable($("redis-nodes"), rrows.map(r => r.cells), "Redis unreachable",
              i => (rrows[i].bad ? "bad" : null));

    fillTable($("cameras"), cams.map(c => [
      el("a", {href: `/cameras/${encodeURIComponent(c.camera)}`}, c.camera),
      badge(STATUS_TEXT[c.status] || c.status, STATUS_LEVEL[c.status]),
      {v: fmt.num(c.fps_in), cls: "num"}, {v: fmt.num(c.fps_processed), cls: "num"},
      {v: fmt.num(c.fps_skipped), cls: "num"},
      {v: fmt.ms(c.latency_ms && c.latency_ms.capture_to_result), cls: "num"},
      {v: fmt.int(c.stream_length), cls: "num"},
      {v: fmt.int(c.consumer_lag) + (c.lag_growth > 0 ? ` ↑${c.lag_growth}` : ""), cls: "num"},
      {v: fmt.int(c.pending), cls: "num"}, {v: fmt.int(c.counters && c.counters.dropped), cls: "num"},
      {v: fmt.age(c.last_frame_age_s), cls: "num"},
    ]), "no camera has sent a frame", i => STATUS_LEVEL[cams[i].status] === "bad" ? "bad" : null);

    const reps = s.replicas || [];
    fillTable($("replicas"), reps.map(r => [
      el("span", {class: "mono"}, r.id), r.node || "–",
      // only the lease holder is the leader; a replica whose last beat still says "leader" has
      // lost the lease (killed, frozen or stepping down) and is shown as such
      (r.shards_led || []).length ? badge(sharded ? `leader · shard${r.shards_led.length > 1 ? "s" : ""} ${r.shards_led.join(",")}` : "leader", "ok")
        : r.role === "leader" ? badge(r.age_s > 2 ? "lost lease · silent" : "lost lease", "bad")
        : badge(r.role, r.role === "standby" ? "" : "warn"),
      {v: fmt.int(r.epoch), cls: "num"}, {v: fmt.num(r.fps), cls: "num"}, {v: fmt.ms(r.lag_ms), cls: "num"},
      `${(r.model || "–").replace(/_openvino_model$|\.(pt|onnx)$/, "")}${r.backend ? " · " + r.backend : ""}${r.device ? " · " + r.device : ""}`,
      {v: fmt.ms(r.ms_per_frame), cls: "num"},
      {v: fmt.age(r.age_s), cls: "num"},
    ]), "no inference replica is beating", i => (reps[i].age_s > 5 ? "bad" : null));

    // inference take-overs and changes of the Redis primary, in one history, newest first
    const fo = [...(s.failovers || []).map(f => ({...f, kind: "inference"})),
                ...(s.redis_failovers || []).map(f => ({...f, kind: "redis"}))]
      .sort((a, b) => (b.time_ms || 0) - (a.time_ms || 0));
    fillTable($("failovers"), fo.map(f => f.kind === "redis" ? [
      fmt.time(f.time_ms), {v: "–", cls: "num"},
      `${f.old || "–"} → ${f.new}`, badge(`redis ${f.reason}`, "warn"), {v: "–", cls: "num"},
    ] : [
      fmt.time(f.time_ms), {v: sharded ? `shard ${f.shard} · ${f.epoch}` : f.epoch, cls: "num"},
      `${f.old || "–"} → ${f.new}`, f.reason,
      {v: f.gap_ms === null || f.gap_ms === undefined ? (f.reason === "initial" ? "–" : "waiting…") : `${f.gap_ms} ms`, cls: "num"},
    ]), "no leadership change recorded");

    $("nodes-source").textContent = s.nodes_source === "docker" ? "Docker API (swarmwatch)" : "from heartbeats";
    $("nodes-source").title = s.docker && s.docker.error ? s.docker.error : "";
    const nodes = s.nodes || [];
    fillTable($("nodes"), nodes.map(n => [
      el("span", {}, n.name, n.manager_leader ? el("span", {class: "muted"}, " (swarm leader)") : null),
      n.role || "–",
      badge(n.state || "?", ["ready", "up"].includes(n.state) ? "ok" : "bad"),
      el("span", {}, ...(n.instances || []).map(i => el("span", {class: "task"},
        badge(`${i.service}${i.role ? " " + i.role : ""}`, i.age_s > 5 ? "bad" : "")))),
    ]), "no node reports", i => (["ready", "up"].includes(nodes[i].state) ? null : "bad"));

    const svcs = s.services || [];
    fillTable($("services"), svcs.map(v => [
      v.name,
      {v: v.desired === null || v.desired === undefined ? `${v.running}` : `${v.running}/${v.desired}`, cls: "num"},
      el("span", {}, ...(v.tasks || []).map(t => el("span", {class: "task"},
        badge(`${t.node}: ${t.state}${t.role ? " (" + t.role + ")" : ""}`, t.state === "running" ? "" : "warn")))),
    ]), "no services", i => (svcs[i].desired && svcs[i].running < svcs[i].desired ? "bad" : null));

    const st = new Set([...Object.keys(ing.replies_total || {}), ...Object.keys(ing.replies_this_minute || {})]);
    fillTable($("ingest-status"), [...st].sort().map(code => [
      badge(code, code >= "400" ? (code >= "500" ? "bad" : "warn") : "ok"),
      {v: (ing.replies_this_minute || {})[code] || 0, cls: "num"},
      {v: (ing.replies_last_minute || {})[code] || 0, cls: "num"},
      {v: (ing.replies_total || {})[code] || 0, cls: "num"},
    ]), "no frames posted yet");
    const inst = ing.instances || [];
    fillTable($("ingest-instances"), inst.map(i => [
      el("span", {class: "mono"}, i.id), i.node, {v: fmt.num(i.requests_per_s), cls: "num"},
      {v: fmt.num(i.accepted_per_s), cls: "num"}, {v: fmt.num(i.errors_per_s), cls: "num"},
      {v: fmt.age(i.age_s), cls: "num"},
    ]), "no ingest instance is beating");

    $("updated").textContent = `updated ${new Date(s.time * 1000).toLocaleTimeString()}`;
  }

  follow("/api/v1/cluster/stream", {cluster: render}, $("conn"));
})();
