// TokenGate dashboard: reads the live feed (server-sent events over fetch, so that the admin
// token can travel in a header when the data needs it), draws the panels and small canvas
// charts, and sends the controls. No library, no request outside this dashboard; every value
// from the server is written with textContent, never parsed as HTML.
"use strict";

(() => {
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content;
  const CONTROLS = meta("tg-controls") === "1";
  const READS_NEED_TOKEN = meta("tg-reads") === "1";
  const HISTORY = 300;
  const INTERVAL = Number(meta("tg-interval")) || 1;
  const base = new URL(".", window.location.href);
  const api = (path) => new URL(`api/${path}`, base).toString();
  const $ = (id) => document.getElementById(id);

  let adminToken = "";
  let history = [];
  let last = null;

  // A token handed over in the address fragment (#token=...) never reaches the server; it is
  // read once and removed from the address bar.
  if (window.location.hash.startsWith("#token=")) {
    adminToken = decodeURIComponent(window.location.hash.slice(7));
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  const tokenInput = $("admin-token");
  if (tokenInput) {
    tokenInput.value = adminToken;
    tokenInput.addEventListener("input", () => { adminToken = tokenInput.value.trim(); });
  }

  // ------------------------------------------------------------------ formatting
  const fmt = (v, digits = 0) => {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (typeof v !== "number") return String(v);
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + "M";
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + "k";
    return v.toLocaleString("en-US", { maximumFractionDigits: digits });
  };
  const ms = (v) => (v === null || v === undefined ? "–" : v < 10 ? `${v.toFixed(2)} ms` : `${fmt(v, 1)} ms`);
  const text = (v) => {
    if (v === null || v === undefined) return "";
    if (typeof v === "object") {
      return Array.isArray(v) ? v.map(text).join(", ")
        : Object.entries(v).map(([k, x]) => `${k}=${text(x)}`).join(" ");
    }
    return String(v);
  };

  function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function table(id, columns, rows, empty) {
    const t = $(id);
    if (!t) return;
    const head = el("tr", {}, columns.map((c) => el("th", { text: c.label, class: c.num ? "num" : "" })));
    t.tHead.replaceChildren(head);
    const body = rows.map((row) => {
      const tr = el("tr", { class: row.__class || "" });
      for (const c of columns) {
        const td = el("td", { class: c.cls || (c.num ? "num" : "") });
        const v = c.value(row);
        if (v instanceof Node) td.append(v); else td.textContent = v === undefined ? "" : v;
        tr.append(td);
      }
      return tr;
    });
    if (!body.length) body.push(el("tr", {}, [el("td", { class: "empty", colspan: String(columns.length), text: empty })]));
    t.tBodies[0].replaceChildren(...body);
  }

  const meter = (value, max) => {
    const m = el("div", { class: "meter", title: `${value} / ${max}` });
    const bar = el("span");
    bar.style.width = `${max > 0 ? Math.min(100, (100 * value) / max) : 0}%`;
    m.append(bar);
    return m;
  };

  // ------------------------------------------------------------------ charts
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function chart(id, series) {
    const canvas = $(id);
    if (!canvas) return;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 300;
    const h = canvas.clientHeight || 160;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const style = getComputedStyle(document.documentElement);
    const color = (name) => style.getPropertyValue(name).trim();
    const left = 46, right = 8, top = 8, bottom = 20;
    const pw = w - left - right, ph = h - top - bottom;
    const points = history;
    let max = 0;
    for (const s of series) for (const p of points) { const v = p[s.key]; if (v > max) max = v; }
    max = niceMax(max);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = color("--muted");
    ctx.strokeStyle = color("--line");
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      ctx.beginPath(); ctx.moveTo(left, y + 0.5); ctx.lineTo(left + pw, y + 0.5); ctx.stroke();
      ctx.fillText(fmt((max * i) / 4, max < 4 ? 2 : 0), left - 4, y);
    }
    const now = points.length ? points[points.length - 1].t : Date.now() / 1000;
    const minimum = 20 * INTERVAL;
    const span = Math.max(minimum, points.length ? now - points[0].t : minimum);
    const x = (t) => left + pw - (pw * (now - t)) / span;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const step = [1, 2, 5, 10, 15, 30, 60, 120].find((s) => span / s <= 5) || 300;
    for (let ago = 0; ago <= span; ago += step) {
      ctx.fillText(ago === 0 ? "now" : `-${ago >= 60 && ago % 60 === 0 ? `${ago / 60}m` : `${ago}s`}`, x(now - ago), top + ph + 5);
    }
    for (const s of series) {
      ctx.strokeStyle = color(s.color);
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      let pen = false;
      for (const p of points) {
        const v = p[s.key];
        if (v === null || v === undefined) { pen = false; continue; }
        const px = x(p.t), py = top + ph - (ph * v) / max;
        if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        pen = true;
      }
      ctx.stroke();
    }
  }

  function drawCharts() {
    chart("chart-rate", [{ key: "rate", color: "--k1" }, { key: "failed_rate", color: "--k3" }]);
    chart("chart-latency", [{ key: "p50", color: "--k1" }, { key: "p99", color: "--k2" }]);
    chart("chart-load", [{ key: "in_flight", color: "--k1" }, { key: "queued", color: "--k2" }, { key: "busy", color: "--k4" }]);
  }

  // ------------------------------------------------------------------ panels
  const control = (label, action, body, danger) => {
    const b = el("button", { type: "button", text: label, class: danger ? "danger" : "" });
    b.addEventListener("click", () => send(action, body));
    return b;
  };
  const KNOWN_CORE = new Set(["core_id", "workers", "busy_workers", "busy", "depth", "backlog"]);
  const KNOWN_OP = new Set(["operation_type", "completed", "failed", "killed", "timeout", "total_duration",
    "max_duration", "finished", "mean_ms", "max_ms", "rate", "in_flight", "paused", "mean_duration"]);
  const extraColumns = (rows, known) => {
    const keys = [];
    for (const r of rows) for (const k of Object.keys(r)) if (!known.has(k) && !keys.includes(k)) keys.push(k);
    return keys.slice(0, 6).map((k) => ({ label: k.replaceAll("_", " "), value: (r) => cell(r[k]) }));
  };

  function render(s) {
    last = s;
    if (s.error) { message(`reading the coordinator failed: ${s.error}`, true); return; }
    const c = s.coordinator;
    $("coordinator-name").textContent = c.name;
    const state = !c.running ? "stopped" : c.paused ? "paused" : "running";
    const pill = $("run-state");
    pill.textContent = state;
    pill.className = `pill ${state}`;
    const p = s.point;
    $("stat-rate").textContent = fmt(p.rate, 1);
    $("stat-p50").textContent = ms(p.p50);
    $("stat-p99").textContent = ms(p.p99);
    $("stat-in-flight").textContent = fmt(c.in_flight);
    $("stat-completed").textContent = fmt(s.by_state.completed || 0);
    $("stat-completed").dataset.value = String(s.by_state.completed || 0);
    $("stat-failed").textContent = fmt((s.by_state.failed || 0) + (s.by_state.timeout || 0));
    $("stat-submitted").textContent = fmt(c.submitted);
    $("stat-pins").textContent = fmt(c.sticky_pins);

    table("cores", [
      { label: "core", value: (r) => r.core_id },
      { label: "busy / workers", value: (r) => {
        const busy = r.busy_workers ?? r.busy ?? 0;
        const box = el("div", { class: "bars" });
        box.append(el("div", { class: "row" }, [el("span", { text: `${busy} / ${r.workers}` }), meter(busy, r.workers), el("span")]));
        return box;
      } },
      { label: "queue depth", num: true, value: (r) => fmt(r.depth) },
      { label: "backlog", num: true, value: (r) => fmt(r.backlog) },
      ...extraColumns(s.cores, KNOWN_CORE),
    ], s.cores, "no core domains (coordinator not started)");

    const states = $("states");
    const entries = Object.entries(s.by_state);
    const top = Math.max(1, ...entries.map(([, v]) => v));
    states.replaceChildren(...entries.map(([k, v]) => el("div", { class: "row", dataset: { state: k } },
      [el("span", { text: k }), meter(v, top), el("span", { class: "num", text: fmt(v) })])));

    const ops = s.operations.map((r) => ({ ...r, __class: r.paused ? "paused" : "" }));
    // figures the coordinator reports per operation elsewhere in its stats (for instance the
    // scheduler's decisions) become columns of the operations table
    const names = new Set(ops.map((r) => r.operation_type));
    const perOperation = Object.entries(s.extra || {}).filter(([, v]) => isMap(v)
      && Object.keys(v).some((k) => names.has(k))).slice(0, 3);
    const opColumns = [
      { label: "operation", cls: "mono", value: (r) => r.operation_type + (r.paused ? " (paused)" : "") },
      { label: "tokens/s", num: true, value: (r) => fmt(r.rate, 1) },
      { label: "in flight", num: true, value: (r) => fmt(r.in_flight) },
      { label: "completed", num: true, value: (r) => fmt(r.completed) },
      { label: "failed", num: true, value: (r) => fmt(r.failed) },
      { label: "killed", num: true, value: (r) => fmt(r.killed) },
      { label: "timeout", num: true, value: (r) => fmt(r.timeout) },
      { label: "mean", num: true, value: (r) => ms(r.mean_ms) },
      { label: "max", num: true, value: (r) => ms(r.max_ms) },
      ...extraColumns(s.operations, KNOWN_OP),
      ...perOperation.map(([key, byOp]) => ({ label: key.replaceAll("_", " "), value: (r) => summary(byOp[r.operation_type]) })),
    ];
    if (CONTROLS) {
      opColumns.push({ label: "", cls: "actions", value: (r) => {
        const span = el("span");
        const op = { operation: r.operation_type };
        span.append(r.paused ? control("resume", "resume", op) : control("pause", "pause", op),
          control("drain", "drain", op, true), control("kill", "kill", op, true));
        return span;
      } });
    }
    table("operations", opColumns, ops, "no operation has run yet");
    $("ops-total").textContent = s.operations_total ? `(${s.operations_total} known)` : "";

    const tokenColumns = [
      { label: "token", cls: "mono", value: (r) => r.token_id },
      { label: "state", value: (r) => r.state },
      { label: "core", num: true, value: (r) => r.core_id ?? "–" },
    ];
    if (CONTROLS) tokenColumns.push({ label: "", cls: "actions", value: (r) => control("kill", "kill", { token: r.token_id }, true) });
    table("tokens", tokenColumns, s.tokens.items, "no token in flight");
    $("tokens-total").textContent = `(${fmt(s.tokens.total)})`;

    table("pins", [
      { label: "sticky key", cls: "mono", value: (r) => text(r[0]) },
      { label: "core", num: true, value: (r) => r[1] },
    ], s.sticky.pins, "no live pin");
    $("pins-total").textContent = `(${fmt(s.sticky.total)})`;

    table("domains", [
      { label: "seed", cls: "mono", value: (r) => r.seed },
      { label: "core", num: true, value: (r) => r.core_id ?? "–" },
      { label: "pending", num: true, value: (r) => fmt(r.pending) },
      { label: "depth", num: true, value: (r) => r.depth ?? 0 },
      { label: "lead", cls: "mono", value: (r) => r.lead_token_id ?? "" },
    ], s.conductor.domains, s.conductor.available ? "no live domain" : "tokengate-conductor is not installed");
    $("domains-total").textContent = s.conductor.available ? `(${fmt(s.conductor.total)})` : "";

    const recordColumns = [
      { label: "token", cls: "mono", value: (r) => r.token_id },
      { label: "state", value: (r) => r.state },
      { label: "core", num: true, value: (r) => r.core_id ?? "–" },
      { label: "worker", num: true, value: (r) => r.worker_id ?? "–" },
      { label: "ran", num: true, value: (r) => (r.duration === null ? "–" : ms(r.duration * 1000)) },
      { label: "latency", num: true, value: (r) => ms(r.latency * 1000) },
    ];
    table("recent", recordColumns, s.recent, "nothing has finished yet");
    table("errors", [
      { label: "token", cls: "mono", value: (r) => r.token_id },
      { label: "state", value: (r) => r.state },
      { label: "core", num: true, value: (r) => r.core_id ?? "–" },
      { label: "error", cls: "err", value: (r) => r.error },
    ], s.errors, "no error");

    const extra = Object.entries(s.extra || {}).filter(([k]) => !perOperation.some(([key]) => key === k));
    $("extra-panel").hidden = extra.length === 0;
    $("extra").replaceChildren(...extra.flatMap(([k, v]) => [el("dt", { text: k.replaceAll("_", " ") }), el("dd", {}, [detail(v)])]));
  }

  const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  // a table cell for any figure; a mapping of mappings (executors of a domain, say) becomes one
  // line per entry: "thread: workers 6, busy 2, backlog 0"
  function cell(v) {
    if (v === null || v === undefined) return "–";
    if (!isMap(v) || !Object.values(v).some(isMap)) return text(v);
    const box = el("div");
    for (const [name, inner] of Object.entries(v)) {
      const parts = [];
      const flat = (obj) => {
        for (const [k, x] of Object.entries(obj)) {
          if (isMap(x)) flat(x); else parts.push(`${k.replaceAll("_", " ")} ${x === null ? "–" : text(x)}`);
        }
      };
      if (isMap(inner)) flat(inner); else parts.push(text(inner));
      box.append(el("div", { text: `${name}: ${parts.join(", ")}` }));
    }
    return box;
  }
  // one cell for a nested figure: a decision's reason or mode if it has one, else key=value
  function summary(v) {
    if (v === null || v === undefined) return "–";
    if (!isMap(v)) return text(v);
    for (const key of ["reason", "decision", "mode", "executor", "kind"]) if (typeof v[key] === "string") return v[key];
    return text(v);
  }
  // a mapping of mappings as a small table, anything else as text
  function detail(v) {
    if (isMap(v) && Object.values(v).length && Object.values(v).every(isMap)) {
      const keys = [];
      for (const row of Object.values(v)) for (const k of Object.keys(row)) if (!keys.includes(k)) keys.push(k);
      const t = el("table");
      t.append(el("thead", {}, [el("tr", {}, [el("th"), ...keys.slice(0, 6).map((k) => el("th", { text: k.replaceAll("_", " ") }))])]));
      t.append(el("tbody", {}, Object.entries(v).map(([name, row]) => el("tr", {}, [el("td", { class: "mono", text: name }),
        ...keys.slice(0, 6).map((k) => el("td", { text: row[k] === null || row[k] === undefined ? "–" : text(row[k]) }))]))));
      return t;
    }
    return document.createTextNode(text(v));
  }

  // ------------------------------------------------------------------ controls
  function message(textValue, error) {
    const m = $("message");
    m.textContent = textValue;
    m.className = `message ${error ? "error" : "ok"}`;
  }

  async function send(action, body) {
    if (!adminToken) { message("enter the admin token first", true); return; }
    try {
      const response = await fetch(api(action), {
        method: "POST",
        credentials: "omit",
        headers: { Authorization: `Bearer ${adminToken}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) { message(`${action} refused (${response.status}): ${answer.error || response.statusText}`, true); return; }
      const what = body.token || body.operation || "everything";
      const count = answer.killed === undefined ? "" : ` — ${answer.killed} token(s) ended`;
      message(`${action} ${what}: done${count}`, false);
    } catch (err) {
      message(`${action} failed: ${err}`, true);
    }
  }

  for (const button of document.querySelectorAll("#admin button[data-action]")) {
    button.addEventListener("click", () => send(button.dataset.action, {}));
  }
  const killForm = $("kill-form");
  if (killForm) {
    killForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("kill-token").value.trim();
      if (id) send("kill", { token: id });
    });
  }
  const adminForm = $("admin");
  if (adminForm) adminForm.addEventListener("submit", (event) => { event.preventDefault(); connect(); });

  // ------------------------------------------------------------------ live feed
  const live = (on, label) => {
    const pill = $("live-state");
    pill.textContent = label;
    pill.className = `pill live ${on ? "on" : "off"}`;
  };

  function onEvent(type, data) {
    const payload = JSON.parse(data);
    if (type === "hello") {
      history = payload.history.slice(-HISTORY);
    } else if (type === "tick") {
      if (payload.point && (!history.length || history[history.length - 1].t !== payload.point.t)) {
        history.push(payload.point);
        if (history.length > HISTORY) history.splice(0, history.length - HISTORY);
      }
      render(payload);
      drawCharts();
    }
  }

  let generation = 0;
  async function connect() {
    const mine = ++generation;
    let delay = 1000;
    while (mine === generation) {
      if (READS_NEED_TOKEN && !adminToken) { live(false, "token needed"); message("enter the admin token to watch this dashboard", true); return; }
      try {
        const headers = { Accept: "text/event-stream" };
        if (READS_NEED_TOKEN) headers.Authorization = `Bearer ${adminToken}`;
        const response = await fetch(api("events"), { headers, cache: "no-store", credentials: "omit" });
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        live(true, "live");
        delay = 1000;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done || mine !== generation) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let type = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) type = line.slice(6).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
            }
            if (data.length) onEvent(type, data.join("\n"));
          }
        }
      } catch (err) {
        // fall through to the reconnect below
      }
      if (mine !== generation) return;
      live(false, "reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 8000);
    }
  }

  window.addEventListener("resize", drawCharts);
  connect();
})();
