"""The single page of ``changecap serve``: plain HTML, CSS and JavaScript inline, no external assets.

With a model that declares attention maps the page offers "where the model looked": it asks the API for them
(``?attention=true``) and draws the selected word's map over the after image in the browser, with the colour ramp
and blending of the HTML report (:mod:`changecap.inference.attention_view`).
"""

import json

from changecap.inference.attention_view import FLOOR_ALPHA, HEAT_STOPS, PEAK_ALPHA

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>changecap</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: sans-serif; margin: 1.5em; max-width: 60em; }
.dates { display: flex; gap: 1em; flex-wrap: wrap; }
.dates figure { margin: 0; width: 256px; }
.dates canvas, .dates img { width: 256px; height: 256px; image-rendering: pixelated; background: #eee; }
#caption { font-size: 1.3em; margin: .6em 0; }
#error { color: #b00020; }
label { margin-right: 1em; }
#words span { display: inline-block; margin: 0 .15em .3em 0; padding: .1em .35em; border-radius: 4px;
  background: #eef1f4; cursor: pointer; }
#words span.on { background: #1f2328; color: #fff; }
.note { color: #57606a; font-size: .9em; }
</style></head>
<body>
<h1>changecap</h1>
<p id="model">loading…</p>
<form id="form">
  <label>before <input type="file" id="before" accept="image/*"></label>
  <label>after <input type="file" id="after" accept="image/*"></label>
  <label>or a sample <select id="sample"><option value="">—</option></select></label>
  <label id="attention-choice" hidden><input type="checkbox" id="attention" checked> where the model looked</label>
  <button type="submit" id="go">Caption</button>
</form>
<div class="dates">
  <figure><img id="before-view" alt="before"><figcaption>before</figcaption></figure>
  <figure><img id="after-view" alt="after"><figcaption>after</figcaption></figure>
  <figure id="mask-figure" hidden><canvas id="overlay" width="256" height="256"></canvas>
    <figcaption>after, predicted change in red</figcaption></figure>
  <figure id="attention-figure" hidden><canvas id="heat" width="256" height="256"></canvas>
    <figcaption id="heat-caption">after, where the model looked</figcaption></figure>
</div>
<p id="caption"></p>
<div id="attention-view" hidden><div id="words"></div>
  <p class="note">Point at a word: the decoder's cross-attention while it wrote that word, over the after image
  (bright = most attended; each map scaled to its own range).</p></div>
<p id="probability"></p>
<p id="error" role="alert"></p>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let files = {before: null, after: null};

function show(which, blob) {
  files[which] = blob;
  $(which + "-view").src = URL.createObjectURL(blob);
}

async function init() {
  const health = await (await fetch("/api/health")).json();
  $("model").textContent = "model: " + health.model + (health.architecture ? " (" + health.architecture + ")" : "")
    + (health.predicts_masks ? ", with change masks" : "");
  $("attention-choice").hidden = !health.capabilities.includes("attention_maps");
  const samples = await (await fetch("/api/samples")).json();
  for (const s of samples) {
    const o = document.createElement("option");
    o.value = s.index; o.textContent = s.name;
    $("sample").appendChild(o);
  }
}

for (const which of ["before", "after"]) {
  $(which).addEventListener("change", (e) => { if (e.target.files[0]) show(which, e.target.files[0]); });
}

$("sample").addEventListener("change", async (e) => {
  if (e.target.value === "") return;
  for (const which of ["before", "after"]) {
    show(which, await (await fetch("/api/samples/" + e.target.value + "/" + which + ".png")).blob());
  }
});

function drawOverlay(maskB64) {
  const canvas = $("overlay"), ctx = canvas.getContext("2d");
  const after = new Image(), mask = new Image();
  after.onload = () => {
    ctx.drawImage(after, 0, 0, canvas.width, canvas.height);
    mask.onload = () => {
      const tmp = document.createElement("canvas");
      tmp.width = canvas.width; tmp.height = canvas.height;
      const t = tmp.getContext("2d");
      t.drawImage(mask, 0, 0, tmp.width, tmp.height);
      const m = t.getImageData(0, 0, tmp.width, tmp.height), out = ctx.getImageData(0, 0, tmp.width, tmp.height);
      for (let i = 0; i < m.data.length; i += 4) {
        if (m.data[i] > 127) { out.data[i] = 230; out.data[i + 1] = 25; out.data[i + 2] = 75; }
      }
      ctx.putImageData(out, 0, 0);
      $("mask-figure").hidden = false;
    };
    mask.src = "data:image/png;base64," + maskB64;
  };
  after.src = $("after-view").src;
}

const HEAT = __HEAT__;

function heatColour(v) {
  for (let i = 1; i < HEAT.stops.length; i++) {
    const [p1, c1] = HEAT.stops[i], [p0, c0] = HEAT.stops[i - 1];
    if (v <= p1) {
      const t = (v - p0) / (p1 - p0);
      return c0.map((c, k) => c + t * (c1[k] - c));
    }
  }
  return HEAT.stops[HEAT.stops.length - 1][1];
}

function drawAttention(att, index) {
  const canvas = $("heat"), ctx = canvas.getContext("2d"), after = new Image();
  const weights = att.maps[index], g = att.grid;
  const lo = Math.min(...weights), hi = Math.max(...weights), spread = hi - lo > 1e-6 ? hi - lo : 1;
  const cells = document.createElement("canvas");
  cells.width = g; cells.height = g;
  const c = cells.getContext("2d"), img = c.createImageData(g, g);
  weights.forEach((w, i) => {
    const v = hi - lo > 1e-6 ? (w - lo) / spread : 0, rgb = heatColour(v);
    img.data.set([...rgb, 255 * (HEAT.floor + (HEAT.peak - HEAT.floor) * v)], 4 * i);
  });
  c.putImageData(img, 0, 0);
  after.onload = () => {
    const [l, t, r, b] = att.box;
    ctx.globalAlpha = 1;
    ctx.drawImage(after, l, t, r - l, b - t, 0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "rgba(0, 0, 0, 0.3)";  // dimmed, as in the report
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(cells, 0, 0, canvas.width, canvas.height);
    $("heat-caption").textContent = "after, where the model looked for \u201c" + att.words[index] + "\u201d ("
      + Math.round(100 * hi) + " % on the top cell)";
    $("attention-figure").hidden = false;
  };
  after.src = $("after-view").src;
  [...$("words").children].forEach((s, i) => s.classList.toggle("on", i === index));
}

function showAttention(att) {
  $("words").replaceChildren(...att.words.map((w, i) => {
    const s = document.createElement("span");
    s.textContent = w;
    s.addEventListener("mouseenter", () => drawAttention(att, i));
    s.addEventListener("click", () => drawAttention(att, i));
    return s;
  }));
  $("attention-view").hidden = att.words.length === 0;
  if (att.words.length) drawAttention(att, 0);
}

$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("error").textContent = ""; $("caption").textContent = ""; $("probability").textContent = "";
  $("mask-figure").hidden = true; $("attention-figure").hidden = true; $("attention-view").hidden = true;
  if (!files.before || !files.after) { $("error").textContent = "choose two images or a sample"; return; }
  const body = new FormData();
  body.append("before", files.before, "before.png");
  body.append("after", files.after, "after.png");
  $("go").disabled = true;
  try {
    const wanted = !$("attention-choice").hidden && $("attention").checked;
    const r = await fetch("/api/caption" + (wanted ? "?attention=true" : ""), {method: "POST", body});
    const data = await r.json();
    if (!r.ok) { $("error").textContent = data.detail || ("error " + r.status); return; }
    $("caption").textContent = data.caption === null ? "(this model makes masks only)" : data.caption;
    if (data.change_probability !== null) {
      $("probability").textContent = "P(change) = " + data.change_probability.toFixed(3);
    }
    if (data.mask_png) drawOverlay(data.mask_png);
    if (data.attention) showAttention(data.attention);
  } catch (err) {
    $("error").textContent = String(err);
  } finally {
    $("go").disabled = false;
  }
});

init();
</script>
</body></html>
"""
#: the page, with the colour ramp of the report's attention view
PAGE = _PAGE.replace("__HEAT__", json.dumps({"stops": HEAT_STOPS, "peak": PEAK_ALPHA, "floor": FLOOR_ALPHA}))
