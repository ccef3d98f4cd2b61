// opmap's graph page: layered layout (longest path + barycentre), canvas drawing of the visible part only,
// module-path groups that expand on click, a node's verdicts on click. window.opmapGraph is its small API.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("data").textContent);
  const COLOUR = {direct: "#2e7d32", decompose: "#00838f", approximate: "#8e24aa", plugin: "#1565c0",
                  "no mapping": "#c62828", input: "#9e9e9e", group: "#546e7a"};
  const STAGE = {ok: "#2e7d32", export: "#c62828", parse: "#c62828", build: "#c62828", stopped: "#9e9e9e"};
  const W = 150, H = 34, GX = 24, GY = 46;
  const nodes = DATA.nodes, edges = DATA.edges;
  const canvas = document.getElementById("graph"), view = document.getElementById("view");
  const ctx = canvas.getContext("2d");
  const details = document.getElementById("details"), status = document.getElementById("status");
  const groups = new Map();  // group key -> member indices
  nodes.forEach((n, i) => { if (n.group) { if (!groups.has(n.group)) groups.set(n.group, []); groups.get(n.group).push(i); } });
  const expanded = new Set();
  if (nodes.length <= 400) groups.forEach((_, k) => expanded.add(k));
  let units = [], unitOf = [], unitEdges = [], pos = [], drawn = 0, drawnNodes = 0;
  let scale = 1, ox = 0, oy = 0;

  function rebuild() {
    units = []; unitOf = new Array(nodes.length);
    const groupUnit = new Map();
    nodes.forEach((n, i) => {
      if (n.group && !expanded.has(n.group)) {
        if (!groupUnit.has(n.group)) { groupUnit.set(n.group, units.length); units.push({group: n.group, members: groups.get(n.group), first: i}); }
        unitOf[i] = groupUnit.get(n.group);
      } else { unitOf[i] = units.length; units.push({node: i, first: i}); }
    });
    const seen = new Set(); unitEdges = [];
    for (const [s, t, dd] of edges) {
      const a = unitOf[s], b = unitOf[t];
      if (a === b) continue;
      const key = a * 1e6 + b;
      if (seen.has(key)) { if (dd) unitEdges.find(e => e[0] === a && e[1] === b)[2] = 1; continue; }
      seen.add(key); unitEdges.push([a, b, dd]);
    }
    layout();
  }

  function layout() {
    const n = units.length, preds = Array.from({length: n}, () => []), succs = Array.from({length: n}, () => []);
    for (const [a, b] of unitEdges) { if (units[a].first < units[b].first) { preds[b].push(a); succs[a].push(b); } }
    const order = [...units.keys()].sort((a, b) => units[a].first - units[b].first);
    const layer = new Array(n).fill(0);
    for (const u of order) for (const p of preds[u]) layer[u] = Math.max(layer[u], layer[p] + 1);  // longest path
    const rows = [];
    for (const u of order) (rows[layer[u]] = rows[layer[u]] || []).push(u);
    const rank = new Array(n);
    rows.forEach(r => r.forEach((u, i) => rank[u] = i));
    const sweep = (list, near) => list.forEach(r => {
      const bary = new Map(r.map(u => { const ns = near[u]; return [u, ns.length ? ns.reduce((s, v) => s + rank[v], 0) / ns.length : rank[u]]; }));
      r.sort((a, b) => bary.get(a) - bary.get(b)); r.forEach((u, i) => rank[u] = i);
    });
    for (let k = 0; k < 4; k++) { sweep(rows.slice(1), preds); sweep(rows.slice(0, -1).reverse(), succs); }  // barycentre
    pos = new Array(n);
    rows.forEach((r, y) => r.forEach((u, i) => pos[u] = {x: (i - (r.length - 1) / 2) * (W + GX), y: y * (H + GY)}));
    status.textContent = `${nodes.length} nodes, ${units.length} drawn units, ${rows.length} layers, ${groups.size} groups`;
  }

  function resize() {
    canvas.width = view.clientWidth * devicePixelRatio; canvas.height = view.clientHeight * devicePixelRatio;
    canvas.style.width = view.clientWidth + "px"; canvas.style.height = view.clientHeight + "px";
  }

  function fit() {
    if (!pos.length) return;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const p of pos) { x0 = Math.min(x0, p.x - W / 2); x1 = Math.max(x1, p.x + W / 2); y0 = Math.min(y0, p.y); y1 = Math.max(y1, p.y + H); }
    const vw = view.clientWidth, vh = view.clientHeight;
    scale = Math.min((vw - 40) / (x1 - x0), (vh - 40) / (y1 - y0), 1.5);  // 20px margins, in screen space
    ox = vw / 2 - scale * (x0 + x1) / 2; oy = 20 - scale * y0;
    draw();
  }

  function colourOf(u) {
    if (u.group) return u.members.some(i => nodes[i].kind === "no mapping") ? COLOUR["no mapping"] : COLOUR.group;
    return COLOUR[nodes[u.node].kind] || "#444";
  }

  function draw() {
    const dpr = devicePixelRatio, vw = view.clientWidth, vh = view.clientHeight;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.clearRect(0, 0, vw, vh);
    ctx.setTransform(dpr * scale, 0, 0, dpr * scale, dpr * ox, dpr * oy);
    const wx0 = -ox / scale - W, wx1 = (vw - ox) / scale + W, wy0 = -oy / scale - H, wy1 = (vh - oy) / scale + H;
    const inView = p => p.x >= wx0 && p.x <= wx1 && p.y >= wy0 && p.y <= wy1;
    ctx.lineWidth = 1 / Math.max(scale, 0.2);
    for (const dd of [0, 1]) {
      ctx.strokeStyle = dd ? "#e65100" : "#9aa"; ctx.setLineDash(dd ? [6, 4] : []); ctx.lineWidth = (dd ? 2.5 : 1) / Math.max(scale, 0.3);
      ctx.beginPath();
      for (const [a, b, d] of unitEdges) {
        if (d !== dd) continue;
        const p = pos[a], q = pos[b];
        if (!inView(p) && !inView(q)) continue;
        ctx.moveTo(p.x, p.y + H); ctx.lineTo(q.x, q.y);
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);
    drawn = 0; drawnNodes = 0;
    const labels = scale > 0.45;
    ctx.font = "11px system-ui, sans-serif"; ctx.textBaseline = "middle";
    units.forEach((u, k) => {
      const p = pos[k];
      if (!inView(p)) return;
      drawn++; drawnNodes += u.group ? u.members.length : 1;
      ctx.fillStyle = colourOf(u);
      ctx.fillRect(p.x - W / 2, p.y, W, H);
      const n = u.group ? null : nodes[u.node];
      const padded = n && n.contract && /pad/i.test(n.contract);
      if (padded) { ctx.strokeStyle = "#6a1b9a"; ctx.lineWidth = 4 / Math.max(scale, 0.3); ctx.strokeRect(p.x - W / 2, p.y, W, H); }
      if (n && n.onnx) { ctx.fillStyle = STAGE[n.onnx.stage] || "#444"; ctx.beginPath(); ctx.arc(p.x + W / 2 - 7, p.y + 7, 5, 0, 7); ctx.fill(); }
      if (labels) {
        ctx.fillStyle = "white";
        const text = u.group ? `▸ ${u.group} (${u.members.length})` : `${n.name} · ${n.op.replace(/^aten\./, "")}`;
        ctx.fillText(text.length > 26 ? text.slice(0, 25) + "…" : text, p.x - W / 2 + 5, p.y + H / 2 - (n && n.contract ? 5 : 0));
        if (n && n.contract) { ctx.fillText(padded ? "padded + count" : "changed contract", p.x - W / 2 + 5, p.y + H / 2 + 8); }
      }
    });
  }

  function unitAt(cx, cy) {
    const x = (cx - ox) / scale, y = (cy - oy) / scale;
    for (let k = 0; k < units.length; k++) { const p = pos[k]; if (Math.abs(x - p.x) <= W / 2 && y >= p.y && y <= p.y + H) return k; }
    return -1;
  }

  const esc = s => String(s == null ? "" : s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

  function show(i) {
    const n = nodes[i];
    let html = `<h2 id="node-title">${esc(n.name)}</h2><div><code>${esc(n.op)}</code> → ${esc(n.shape)}</div>`;
    if (n.kind !== "input") html += `<p><b>${esc(n.strategy || "no mapping")}</b> (${esc(n.kind)})</p><p>${esc(n.why)}</p>`;
    if (n.stack) html += `<p class="ev">module ${esc(n.stack)}</p>`;
    if (n.contract) html += `<p style="color:#6a1b9a">${esc(n.contract)}</p>`;
    if (n.onnx) html += `<p>ONNX route: <b style="color:${STAGE[n.onnx.stage]}">${esc(n.onnx.stage)}</b> ${esc(n.onnx.message || "")}</p>`;
    html += `<div id="verdicts">`;
    for (const v of n.verdicts) {
      html += `<div class="v"><b class="${esc(v.outcome)}">${esc(v.outcome)}</b> ${esc(v.strategy)}`;
      if (v.reason) html += `<div>${esc(v.reason)}</div>`;
      if (v.expression) html += `<div><code>assert ${esc(v.expression)}</code></div>`;
      for (const [k, val] of Object.entries(v.evidence || {})) html += `<div class="ev">${esc(k)} = ${esc(val)}</div>`;
      html += `</div>`;
    }
    details.innerHTML = html + `</div>`;
  }

  let drag = null;
  canvas.addEventListener("mousedown", e => { drag = {x: e.clientX, y: e.clientY, ox, oy, moved: false}; });
  window.addEventListener("mousemove", e => {
    if (!drag) return;
    if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 3) drag.moved = true;
    ox = drag.ox + e.clientX - drag.x; oy = drag.oy + e.clientY - drag.y; requestAnimationFrame(draw);
  });
  window.addEventListener("mouseup", e => {
    const d = drag; drag = null;
    if (!d || d.moved) return;
    const r = canvas.getBoundingClientRect(), k = unitAt(e.clientX - r.left, e.clientY - r.top);
    if (k < 0 || e.target !== canvas) return;
    if (units[k].group) { expanded.add(units[k].group); rebuild(); draw(); } else show(units[k].node);
  });
  canvas.addEventListener("wheel", e => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect(), cx = e.clientX - r.left, cy = e.clientY - r.top, f = Math.exp(-e.deltaY / 500);
    ox = cx - (cx - ox) * f; oy = cy - (cy - oy) * f; scale *= f; requestAnimationFrame(draw);
  }, {passive: false});
  document.getElementById("expand").onclick = () => { groups.forEach((_, k) => expanded.add(k)); rebuild(); fit(); };
  document.getElementById("collapse").onclick = () => { expanded.clear(); rebuild(); fit(); };
  document.getElementById("fit").onclick = fit;
  window.addEventListener("resize", () => { resize(); draw(); });

  window.opmapGraph = {
    total: nodes.length,
    drawnNodes: () => drawnNodes, drawnUnits: () => drawn, units: () => units.length,
    expandAll: () => document.getElementById("expand").click(),
    collapseAll: () => document.getElementById("collapse").click(),
    // where a node (or the group holding it) is on screen, in page coordinates
    locate: name => {
      const i = nodes.findIndex(n => n.name === name); if (i < 0) return null;
      const p = pos[unitOf[i]], r = canvas.getBoundingClientRect();
      return {x: r.left + ox + scale * p.x, y: r.top + oy + scale * (p.y + H / 2), grouped: !!units[unitOf[i]].group};
    },
    zoomTo: (name, s) => { const i = nodes.findIndex(n => n.name === name), p = pos[unitOf[i]];
      scale = s; ox = view.clientWidth / 2 - s * p.x; oy = view.clientHeight / 2 - s * (p.y + H / 2); draw(); },
  };
  resize(); rebuild(); fit();
})();
