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
  } catch (err) {
    el.textContent = `model info unavailable (${err.message})`;
  }
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
  showInfo();
  moreCats(seedsFromAddress());
}

init();
