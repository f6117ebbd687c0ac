"""The status page: one self-contained HTML document (no CDN, no external assets).

A few lines of vanilla JavaScript fetch ``status.json`` every second and
render it with ``textContent`` only (event text never becomes markup). After
the first successful render ``<body data-loaded="1">`` is set, and every route
row carries ``data-model`` and ``data-active``, so a headless browser test can
tell that the script ran.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>weir · live</title>
<style>
  :root { --ink:#1d2430; --muted:#6b7585; --line:#e3e7ee; --bg:#f5f7fa; --card:#fff;
          --ok:#1f8a4c; --bad:#c0392b; --warn:#b7791f; --accent:#2f5bd3; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
         color:var(--ink); background:var(--bg); }
  header { display:flex; align-items:center; gap:16px; padding:12px 24px;
           background:#18202c; color:#fff; }
  header .brand { font-weight:700; font-size:18px; letter-spacing:.5px; }
  header .who { color:#aeb8c8; }
  header .right { margin-left:auto; display:flex; gap:12px; align-items:center; }
  .pill { padding:2px 10px; border-radius:999px; font-size:12px; font-weight:600;
          background:#556; color:#fff; }
  .pill.ok { background:var(--ok); } .pill.bad { background:var(--bad); }
  .pill.warn { background:var(--warn); }
  main { padding:16px 24px; display:grid; gap:16px; }
  .tiles { display:grid; grid-template-columns:repeat(5, 1fr); gap:12px; }
  .tile, .card { background:var(--card); border:1px solid var(--line); border-radius:8px; }
  .tile { padding:12px 14px; }
  .tile .label { color:var(--muted); font-size:12px; text-transform:uppercase;
                 letter-spacing:.6px; }
  .tile .value { font-size:26px; font-weight:650; margin-top:2px;
                 font-variant-numeric:tabular-nums; }
  .tile .sub { color:var(--muted); font-size:12px; }
  .cols { display:grid; grid-template-columns:1fr 1fr; gap:16px; align-items:start; }
  .stack { display:grid; gap:16px; }
  .card h2 { margin:0; padding:10px 14px; font-size:13px; text-transform:uppercase;
             letter-spacing:.6px; color:var(--muted); border-bottom:1px solid var(--line); }
  table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
  th, td { text-align:left; padding:7px 14px; border-bottom:1px solid var(--line); }
  th { font-weight:600; color:var(--muted); font-size:12px; }
  tr:last-child td { border-bottom:none; }
  .ver { font-weight:650; color:var(--accent); }
  .none { color:var(--muted); }
  .bar { height:8px; background:var(--line); border-radius:4px; overflow:hidden; width:140px;
         display:inline-block; vertical-align:middle; margin-right:8px; }
  .bar i { display:block; height:100%; background:var(--accent); }
  ul.feed { list-style:none; margin:0; padding:0; max-height:300px; overflow:auto; }
  ul.feed li { display:grid; grid-template-columns:64px 140px 1fr; gap:8px;
               padding:6px 14px; border-bottom:1px solid var(--line); }
  ul.feed li:last-child { border-bottom:none; }
  ul.feed li.empty { display:block; }
  .time { color:var(--muted); font-variant-numeric:tabular-nums; }
  .kind { font-weight:600; white-space:nowrap; }
  .kind.ok { color:var(--ok); } .kind.bad { color:var(--bad); }
  .summary { overflow:hidden; display:-webkit-box; -webkit-box-orient:vertical;
             -webkit-line-clamp:2; overflow-wrap:anywhere; }
  .empty { padding:10px 14px; color:var(--muted); }
</style>
</head>
<body data-loaded="0">
<header>
  <span class="brand">weir</span>
  <span class="who" id="who">connecting…</span>
  <span class="right">
    <span class="pill" id="ready">…</span>
    <span class="who" id="updated"></span>
  </span>
</header>
<main>
  <section class="tiles">
    <div class="tile"><div class="label">Throughput</div>
      <div class="value" id="throughput">&ndash;</div><div class="sub" id="window"></div></div>
    <div class="tile"><div class="label">Records consumed</div>
      <div class="value" id="consumed">&ndash;</div><div class="sub">since start</div></div>
    <div class="tile"><div class="label">Predictions</div>
      <div class="value" id="predictions">&ndash;</div><div class="sub" id="by-version"></div></div>
    <div class="tile"><div class="label">Dead letters</div>
      <div class="value" id="dead">&ndash;</div><div class="sub">since start</div></div>
    <div class="tile"><div class="label">Consumer lag</div>
      <div class="value" id="lag">&ndash;</div><div class="sub">records not committed</div></div>
  </section>
  <section class="cols">
    <div class="stack">
      <div class="card"><h2>Routes</h2>
        <table><thead><tr><th>model</th><th>active</th><th>canary</th><th>shadow</th>
        <th>speculative</th></tr>
        </thead><tbody id="routes"></tbody></table></div>
      <div class="card"><h2>Rolling accuracy</h2>
        <table><thead><tr><th>version</th><th>accuracy</th><th>outcomes</th></tr></thead>
        <tbody id="accuracy"></tbody></table></div>
      <div class="card"><h2>Canary contest</h2><div id="contest"></div></div>
    </div>
    <div class="stack">
      <div class="card"><h2>Recent swaps and runs</h2><ul class="feed" id="swaps"></ul></div>
      <div class="card"><h2>Recent alerts</h2><ul class="feed" id="alerts"></ul></div>
    </div>
  </section>
</main>
<script>
const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat("en-US");
const DASH = "\\u2013";
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function version(v) { return v == null ? el("span", "none", DASH) : el("span", "ver", "v" + v); }
function cell(child) { const td = el("td"); td.append(child); return td; }
function empty(target, cols, text) {
  if (cols) { const tr = el("tr"); const td = el("td", "empty", text); td.colSpan = cols;
              tr.append(td); target.replaceChildren(tr); }
  else { target.replaceChildren(el("li", "empty", text)); }
}
function feed(target, items, text) {
  if (!items.length) return empty(target, 0, text);
  target.replaceChildren(...items.map((h) => {
    const li = el("li");
    const state = h.ok === true ? " ok" : h.ok === false ? " bad" : "";
    li.append(el("span", "time", new Date(h.at).toLocaleTimeString("en-GB")),
              el("span", "kind" + state, h.kind + (h.version ? " v" + h.version : "")),
              el("span", "summary", h.summary + (h.times > 1 ? " (" + h.times + " times since "
                 + new Date(h.since).toLocaleTimeString("en-GB") + ")" : "")));
    li.title = h.summary;
    return li;
  }));
}
function render(s) {
  $("who").textContent = "worker " + s.worker + " · model " + s.model;
  $("ready").textContent = s.ready ? "ready" : "catching up";
  $("ready").className = "pill " + (s.ready ? "ok" : "warn");
  $("updated").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
  $("throughput").textContent = s.throughput_rps.toFixed(1);
  $("window").textContent = "records/s, last " + s.throughput_window_s + " s";
  $("consumed").textContent = fmt.format(s.records_consumed);
  const versions = Object.entries(s.predictions);
  $("predictions").textContent = fmt.format(versions.reduce((n, [, c]) => n + c, 0));
  $("by-version").textContent = versions.map(([v, c]) => "v" + v + ": " + fmt.format(c))
    .join(" · ") || "none yet";
  $("dead").textContent = fmt.format(s.dead_letters);
  $("lag").textContent = s.consumer_lag == null ? DASH : fmt.format(s.consumer_lag);
  if (!s.routes.length) empty($("routes"), 5, "no route yet");
  else $("routes").replaceChildren(...s.routes.map((r) => {
    const tr = el("tr");
    tr.dataset.model = r.model;
    tr.dataset.active = r.active ?? "";
    const canary = r.canary == null ? version(null)
      : el("span", "ver", "v" + r.canary + " (" + Math.round(r.canary_weight * 100) + "%)");
    const spec = r.speculative == null ? version(null) : el("span", "ver", r.speculative);
    tr.append(cell(el("span", "", r.model)), cell(version(r.active)), cell(canary),
              cell(version(r.shadow)), cell(spec));
    return tr;
  }));
  if (!s.accuracy.length) empty($("accuracy"), 3, "no labelled outcomes yet");
  else $("accuracy").replaceChildren(...s.accuracy.map((a) => {
    const tr = el("tr");
    const bar = el("span", "bar"); const fill = el("i");
    fill.style.width = (a.accuracy * 100).toFixed(1) + "%"; bar.append(fill);
    const acc = el("span"); acc.append(bar, (a.accuracy * 100).toFixed(1) + " %");
    const agrees = a.agreement == null ? ""
      : " · agrees " + (a.agreement * 100).toFixed(1) + " %";
    tr.append(cell(version(a.version)), cell(acc),
              cell(el("span", "", fmt.format(a.outcomes) + agrees)));
    return tr;
  }));
  contest(s.contest);
  feed($("swaps"), s.swaps, "no swaps or runs yet");
  feed($("alerts"), s.alerts, "no alerts yet");
}
function contest(c) {
  const box = $("contest");
  if (c == null) { box.replaceChildren(el("p", "empty", "no canary is being judged")); return; }
  const pct = (x) => x == null ? DASH : (x * 100).toFixed(1) + " %";
  const signed = (x) => (x >= 0 ? "+" : "") + (x * 100).toFixed(1);
  const table = el("table");
  const head = el("tr");
  head.append(el("th", "", "version"), el("th", "", "role"), el("th", "", "accuracy"),
              el("th", "", "outcomes"));
  const row = (v, role, acc, n) => {
    const tr = el("tr");
    tr.append(cell(version(v)), cell(el("span", "", role)), cell(el("span", "", pct(acc))),
              cell(el("span", "", fmt.format(n))));
    return tr;
  };
  table.append(head, row(c.canary, "canary " + Math.round(c.weight * 100) + "%",
                         c.canary_accuracy, c.canary_outcomes),
               row(c.active, "active", c.active_accuracy, c.active_outcomes));
  const span = c.low == null ? "no look yet"
    : "canary \\u2212 active in [" + signed(c.low) + ", " + signed(c.high) + "] points";
  const verdict = el("p", "sub", "look " + c.looks + " · " + span + " · ");
  const state = el("span", "pill " + ({ promote: "ok", step: "ok", rollback: "bad" }[c.standing]
                                      || "warn"), c.standing);
  verdict.append(state);
  box.dataset.standing = c.standing;
  box.replaceChildren(table, verdict);
}
async function refresh() {
  try {
    const answer = await fetch("status.json", { cache: "no-store" });
    render(await answer.json());
    document.body.dataset.loaded = "1";
  } catch (err) {
    $("ready").textContent = "unreachable";
    $("ready").className = "pill bad";
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"""
