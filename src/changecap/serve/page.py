"""The single page of ``changecap serve``: plain HTML, CSS and JavaScript inline, no external assets."""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>changecap</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: sans-serif; margin: 1.5em; max-width: 60em; }
.dates { display: flex; gap: 1em; flex-wrap: wrap; }
.dates figure { margin: 0; }
.dates canvas, .dates img { width: 256px; height: 256px; image-rendering: pixelated; background: #eee; }
#caption { font-size: 1.3em; margin: .6em 0; }
#error { color: #b00020; }
label { margin-right: 1em; }
</style></head>
<body>
<h1>changecap</h1>
<p id="model">loading…</p>
<form id="form">
  <label>before <input type="file" id="before" accept="image/*"></label>
  <label>after <input type="file" id="after" accept="image/*"></label>
  <label>or a sample <select id="sample"><option value="">—</option></select></label>
  <button type="submit" id="go">Caption</button>
</form>
<div class="dates">
  <figure><img id="before-view" alt="before"><figcaption>before</figcaption></figure>
  <figure><img id="after-view" alt="after"><figcaption>after</figcaption></figure>
  <figure id="mask-figure" hidden><canvas id="overlay" width="256" height="256"></canvas>
    <figcaption>after, predicted change in red</figcaption></figure>
</div>
<p id="caption"></p>
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

$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("error").textContent = ""; $("caption").textContent = ""; $("probability").textContent = "";
  $("mask-figure").hidden = true;
  if (!files.before || !files.after) { $("error").textContent = "choose two images or a sample"; return; }
  const body = new FormData();
  body.append("before", files.before, "before.png");
  body.append("after", files.after, "after.png");
  $("go").disabled = true;
  try {
    const r = await fetch("/api/caption", {method: "POST", body});
    const data = await r.json();
    if (!r.ok) { $("error").textContent = data.detail || ("error " + r.status); return; }
    $("caption").textContent = data.caption === null ? "(this model makes masks only)" : data.caption;
    if (data.change_probability !== null) {
      $("probability").textContent = "P(change) = " + data.change_probability.toFixed(3);
    }
    if (data.mask_png) drawOverlay(data.mask_png);
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
