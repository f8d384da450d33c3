// DrawingBot page: POST /api/generate, then show every stage of every sample and, for the word
// under the pointer (or the one clicked), its attention map over each attention stage's image.
// The overlay is viz.overlay_attention's: out = 0.75 (0.4 + 0.6 a) image + 0.25 a (1, a, 0).
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_SEED = 4294967295;
const state = { result: null, images: [], maps: [], selected: 0, preview: null };

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function loadImage(base64) {
  const img = new Image();
  img.src = "data:image/png;base64," + base64;
  return img.decode().then(() => img);
}

function overlay(canvas, image, map) {
  const w = image.naturalWidth;
  const h = image.naturalHeight;
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(map, 0, 0, w, h); // upsampled to the image
  const a = ctx.getImageData(0, 0, w, h).data;
  ctx.drawImage(image, 0, 0, w, h);
  const out = ctx.getImageData(0, 0, w, h);
  const d = out.data;
  for (let i = 0; i < d.length; i += 4) {
    const t = a[i] / 255;
    const dim = 0.75 * (0.4 + 0.6 * t);
    d[i] = dim * d[i] + 63.75 * t;
    d[i + 1] = dim * d[i + 1] + 63.75 * t * t;
    d[i + 2] = dim * d[i + 2];
  }
  ctx.putImageData(out, 0, 0);
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function loadHealth() {
  try {
    const response = await fetch("/api/health");
    const info = await response.json();
    const m = info.model;
    $("model-info").textContent =
      `Model ${m.name}: ${m.stages.length} stages (${m.stages.join(", ")} px), ` +
      `${m.vocabulary_size} words · ${info.device} · attention ops: ${info.attention_backend}`;
    $("n").max = info.limits.max_n;
    $("caption").maxLength = info.limits.max_chars;
    $("caption").title = `At most ${info.limits.max_words} words`;
  } catch (err) {
    $("model-info").textContent = "The server does not answer.";
  }
}

function wordShown() {
  return state.preview ?? state.selected;
}

function renderWords(result) {
  const list = $("words");
  list.replaceChildren();
  result.tokens.forEach((word, i) => {
    const button = el("button", { type: "button", textContent: word, dataset: { word: i } });
    list.append(el("li", {}, [button]));
  });
  const unknown = $("unknown");
  unknown.hidden = result.unknown.length === 0;
  unknown.textContent = `Left out (not in the model's vocabulary): ${result.unknown.join(", ")}`;
}

function renderSamples(result) {
  const samples = $("samples");
  samples.replaceChildren();
  for (let k = 0; k < result.n; k++) {
    const stages = el("div", { className: "stages" });
    result.stages.forEach((stage, s) => {
      const img = state.images[k][s].cloneNode();
      img.className = "stage";
      img.alt = `sample ${k + 1}, stage ${stage.stage}`;
      const label = `stage ${stage.stage} · ${stage.size} px`;
      stages.append(el("figure", {}, [img, el("figcaption", { textContent: label })]));
    });
    result.attention.forEach((att, j) => {
      const canvas = el("canvas", { className: "focus", dataset: { sample: k, att: j } });
      const caption = el("figcaption", { dataset: { sample: k, att: j } });
      stages.append(el("figure", { className: "attention" }, [canvas, caption]));
    });
    const labels = result.attention.map((att) => el("span", { textContent: `stage ${att.stage}` }));
    const strip = el("div", { className: "strip" }, [
      el("div", { className: "column labels" }, [el("span"), ...labels]),
    ]);
    result.tokens.forEach((word, i) => {
      const maps = result.attention.map((att, j) =>
        el("canvas", { className: "thumb", dataset: { sample: k, att: j, word: i } }),
      );
      const head = el("button", { type: "button", textContent: word, dataset: { word: i } });
      strip.append(el("div", { className: "column", dataset: { word: i } }, [head, ...maps]));
    });
    const title = el("h3", { textContent: `Sample ${k + 1}` });
    samples.append(el("article", { className: "sample" }, [title, stages, strip]));
    for (const canvas of strip.querySelectorAll("canvas.thumb")) {
      const j = Number(canvas.dataset.att);
      const imageIndex = result.attention[j].stage - 1;
      overlay(canvas, state.images[k][imageIndex], state.maps[k][j][canvas.dataset.word]);
    }
  }
}

function updateFocus() {
  const result = state.result;
  if (!result) return;
  const w = wordShown();
  for (const canvas of document.querySelectorAll("canvas.focus")) {
    const k = Number(canvas.dataset.sample);
    const j = Number(canvas.dataset.att);
    overlay(canvas, state.images[k][result.attention[j].stage - 1], state.maps[k][j][w]);
  }
  for (const caption of document.querySelectorAll("figure.attention figcaption")) {
    const att = result.attention[Number(caption.dataset.att)];
    caption.textContent = `“${result.tokens[w]}” · stage ${att.stage} attention`;
  }
  for (const node of document.querySelectorAll("[data-word]")) {
    const i = Number(node.dataset.word);
    node.classList.toggle("shown", i === w);
    if (node.tagName === "BUTTON") node.setAttribute("aria-pressed", String(i === state.selected));
  }
}

async function render(result) {
  // Decode every image and map once; the canvases draw from these.
  state.images = await Promise.all(
    Array.from({ length: result.n }, (_, k) =>
      Promise.all(result.stages.map((stage) => loadImage(stage.images_png[k]))),
    ),
  );
  state.maps = await Promise.all(
    Array.from({ length: result.n }, (_, k) =>
      Promise.all(result.attention.map((att) => Promise.all(att.maps_png[k].map(loadImage)))),
    ),
  );
  state.result = result;
  state.selected = 0;
  state.preview = null;
  renderWords(result);
  renderSamples(result);
  $("result").hidden = false;
  $("result").classList.toggle("no-attention", result.attention.length === 0);
  updateFocus();
}

async function generate(event) {
  event?.preventDefault();
  const sameNoise = $("same-noise").checked;
  const seedText = $("seed").value.trim();
  const body = {
    caption: $("caption").value,
    n: Number($("n").value) || 1,
    seed: sameNoise && seedText !== "" ? Number(seedText) : null,
    same_noise: sameNoise,
  };
  $("generate").disabled = true;
  $("status").textContent = "Drawing…";
  showError("");
  try {
    const response = await fetch("/api/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const message = data?.error?.message ?? `the server answered ${response.status}`;
      throw new Error(message);
    }
    $("seed").value = data.seed;
    await render(data);
    const known = data.tokens.length;
    $("status").textContent =
      `${data.n} image${data.n > 1 ? "s" : ""} from ${known} word${known > 1 ? "s" : ""} ` +
      `(seed ${data.seed}) in ${data.seconds.toFixed(2)} s on ${data.device}.`;
  } catch (err) {
    $("status").textContent = "";
    showError(err.message);
  } finally {
    $("generate").disabled = false;
  }
}

function wordOf(event) {
  const node = event.target.closest("[data-word]");
  return node && state.result ? Number(node.dataset.word) : null;
}

function setup() {
  $("form").addEventListener("submit", generate);
  $("caption").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) generate(event);
  });
  $("new-seed").addEventListener("click", () => {
    $("seed").value = Math.floor(Math.random() * (MAX_SEED + 1));
  });
  const result = $("result");
  const preview = (event) => {
    const w = wordOf(event);
    if (w !== state.preview) {
      state.preview = w;
      updateFocus();
    }
  };
  result.addEventListener("mouseover", preview);
  result.addEventListener("focusin", preview);
  result.addEventListener("mouseleave", () => {
    state.preview = null;
    updateFocus();
  });
  result.addEventListener("click", (event) => {
    const w = wordOf(event);
    if (w !== null) {
      state.selected = w;
      state.preview = null;
      updateFocus();
    }
  });
  loadHealth();
}

setup();
