// catgan serve: the page. Plain JS, no dependencies, nothing loaded from elsewhere.
"use strict";

const GRID_SIZE = 16;
const SEED_LIMIT = 2 ** 32;

const state = {
  seeds: [],
  truncation: 1,
  selected: null, // seed shown large
  a: null,
  b: null,
};

const $ = (id) => document.getElementById(id);

function randomSeeds(n) {
  const values = new Uint32Array(n);
  crypto.getRandomValues(values);
  return Array.from(values);
}

// Seeds from the page address, e.g. /?seeds=1,2,3 (for links and screenshots); else random.
function seedsFromAddress() {
  const text = new URLSearchParams(location.search).get("seeds");
  if (!text) return null;
  const seeds = text.split(",").map(Number).filter((s) => Number.isInteger(s) && s >= 0 && s < SEED_LIMIT);
  return seeds.length ? seeds.slice(0, 64) : null;
}

const truncationParam = () => `truncation=${state.truncation.toFixed(2)}`;
const catUrl = (seed) => `/api/cat/${seed}.png?${truncationParam()}`;
const walkUrl = (t) => `/api/interpolate.png?a=${state.a}&b=${state.b}&t=${t.toFixed(2)}&${truncationParam()}`;

function renderGrid() {
  const grid = $("grid");
  grid.replaceChildren(
    ...state.seeds.map((seed) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "cat";
      button.dataset.seed = String(seed);
      button.title = `seed ${seed}`;
      button.classList.toggle("selected", seed === state.selected);
      button.classList.toggle("is-a", seed === state.a);
      button.classList.toggle("is-b", seed === state.b);
      const img = document.createElement("img");
      img.src = catUrl(seed);
      img.alt = `cat, seed ${seed}`;
      img.width = 128;
      img.height = 128;
      button.append(img);
      button.addEventListener("click", () => select(seed));
      return button;
    }),
  );
}

function markGrid() {
  for (const el of document.querySelectorAll("#grid .cat")) {
    const seed = Number(el.dataset.seed);
    el.classList.toggle("selected", seed === state.selected);
    el.classList.toggle("is-a", seed === state.a);
    el.classList.toggle("is-b", seed === state.b);
  }
}

function select(seed) {
  state.selected = seed;
  $("detail").hidden = false;
  $("detail-img").src = catUrl(seed);
  $("detail-seed").textContent = String(seed);
  const link = $("download");
  link.href = catUrl(seed);
  link.download = `cat-seed${String(seed).padStart(6, "0")}.png`;
  markGrid();
}

function renderWalk() {
  const t = Number($("t").value);
  $("t-value").textContent = t.toFixed(2);
  if (state.a === null || state.b === null) return;
  $("walk-a").src = catUrl(state.a);
  $("walk-b").src = catUrl(state.b);
  $("walk-a-seed").textContent = String(state.a);
  $("walk-b-seed").textContent = String(state.b);
  $("walk-img").src = walkUrl(t);
}

function moreCats(seeds) {
  state.seeds = seeds || randomSeeds(GRID_SIZE);
  state.a = state.seeds[0];
  state.b = state.seeds[1 % state.seeds.length];
  renderGrid();
  renderWalk();
  if (state.selected !== null) select(state.selected);
}

async function showInfo() {
  const el = $("model-info");
  try {
    const response = await fetch("/api/info");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const info = await response.json();
    const params = (info.g_params / 1e6).toFixed(2);
    el.textContent = `model ${info.name} · ${info.image_size}×${info.image_size} px · ${info.model.arch} · z ${info.model.z_dim} · ${params} M parameters`;
    $("model-hash").textContent = `sha256 ${info.sha256.slice(0, 12)}…`;
    $("model-hash").title = `${info.sha256}\n${info.source}`;
    document.body.classList.toggle("pixelated", info.image_size <= 32);
    if (info.upload) {
      own.maxBytes = info.upload.max_bytes;
      own.types = info.upload.types;
    }
  } catch (err) {
    el.textContent = `model info unavailable (${err.message})`;
  }
}

// ---- your own cat: upload -> projection -> direction sliders, morph, download ----------------------

const own = {
  latent: null, // base64url float32, from /api/project; lives only in this page
  directions: [], // from /api/directions
  amounts: [], // one per slider
  maxBytes: 10 * 2 ** 20,
  types: ["image/png", "image/jpeg", "image/webp"],
};
const OWN_SLIDERS = 5;

function ownStatus(text, isError = false) {
  const el = $("own-status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function editUrl() {
  const moves = own.amounts.map((a, i) => [own.directions[i].index, a]).filter(([, a]) => a !== 0);
  const params = new URLSearchParams({ z: own.latent });
  if (moves.length) params.set("d", moves.map(([k, a]) => `${k}:${a.toFixed(2)}`).join(","));
  const t = Number($("own-t").value);
  const seed = Number($("own-seed").value);
  if (t > 0 && Number.isInteger(seed) && seed >= 0 && seed < SEED_LIMIT) {
    params.set("morph", String(seed));
    params.set("t", t.toFixed(2));
  }
  return `/api/edit.png?${params}`;
}

function renderEdit() {
  $("own-t-value").textContent = Number($("own-t").value).toFixed(2);
  if (own.latent === null) return;
  const url = editUrl();
  $("own-edited").src = url;
  $("own-download").href = url;
}

function renderSliders() {
  const box = $("own-sliders");
  own.amounts = own.directions.map(() => 0);
  box.replaceChildren(
    ...own.directions.flatMap((d, i) => {
      const label = document.createElement("label");
      label.htmlFor = `own-d${i}`;
      label.textContent = d.label;
      const input = document.createElement("input");
      Object.assign(input, { id: `own-d${i}`, type: "range", min: "-3", max: "3", step: "0.25", value: "0" });
      input.dataset.direction = String(d.index);
      const out = document.createElement("output");
      out.textContent = "0.00";
      input.addEventListener("input", () => {
        own.amounts[i] = Number(input.value);
        out.textContent = own.amounts[i].toFixed(2);
        renderEdit();
      });
      return [label, input, out];
    }),
  );
}

async function loadDirections() {
  const response = await fetch("/api/directions");
  if (!response.ok) throw new Error(`directions: HTTP ${response.status}`);
  own.directions = (await response.json()).directions.slice(0, OWN_SLIDERS);
  renderSliders();
}

async function project(event) {
  event.preventDefault();
  const file = $("own-file").files[0];
  if (!file) return ownStatus("choose a photo first", true);
  if (!own.types.includes(file.type)) return ownStatus(`not a PNG, JPEG or WebP image (${file.type || "unknown type"})`, true);
  if (file.size > own.maxBytes) return ownStatus(`photo too large: ${file.size} bytes, at most ${own.maxBytes}`, true);
  ownStatus("projecting…");
  $("own-go").disabled = true;
  try {
    const align = $("own-crop").checked ? "crop" : "detect";
    const response = await fetch(`/api/project?align=${align}`, {
      method: "POST",
      headers: { "Content-Type": file.type },
      body: file,
    });
    const body = await response.json();
    if (!response.ok) return ownStatus(body.error || `HTTP ${response.status}`, true);
    own.latent = body.latent;
    $("own-aligned").src = body.aligned;
    $("own-projected").src = body.projected;
    if (!own.directions.length) await loadDirections();
    else renderSliders();
    $("own-t").value = "0";
    $("own-result").hidden = false;
    renderEdit();
    const notes = body.notes.length ? ` (${body.notes.join("; ")})` : "";
    ownStatus(`projected in ${body.seconds} s, PSNR ${body.psnr} dB${notes}`);
  } catch (err) {
    ownStatus(`projection failed (${err.message})`, true);
  } finally {
    $("own-go").disabled = false;
  }
}

function initOwn() {
  $("own-form").addEventListener("submit", project);
  $("own-t").addEventListener("input", renderEdit);
  $("own-seed").addEventListener("change", renderEdit);
  $("own-reset").addEventListener("click", () => {
    renderSliders();
    $("own-t").value = "0";
    renderEdit();
  });
}

function init() {
  $("more").addEventListener("click", () => moreCats());
  $("truncation").addEventListener("input", (event) => {
    state.truncation = Number(event.target.value);
    $("truncation-value").textContent = state.truncation.toFixed(2);
    renderGrid();
    renderWalk();
    if (state.selected !== null) select(state.selected);
  });
  $("t").addEventListener("input", renderWalk);
  $("set-a").addEventListener("click", () => {
    state.a = state.selected;
    markGrid();
    renderWalk();
  });
  $("set-b").addEventListener("click", () => {
    state.b = state.selected;
    markGrid();
    renderWalk();
  });
  initOwn();
  showInfo();
  moreCats(seedsFromAddress());
}

init();
