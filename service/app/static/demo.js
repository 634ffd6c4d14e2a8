// The demo page: one image through /encode -> /decode, /reconstruct, /anomaly-score and /compare, figures
// shown; a full-resolution viewer with zoom and a wipe (or flip) between the original and any result.
// Plain browser JavaScript, no build step. Paths are relative so the page also works behind a prefix.
"use strict";

const $ = (id) => document.getElementById(id);
const EMPTY_VIEW = "Choose an image: it shows here at full resolution, the original left of the wipe, the "
  + "reconstruction right of it.";
const CODEC_NAMES = { aec: "aecodec", jpeg: "JPEG", webp: "WebP", avif: "AVIF", heatmap: "heat map" };
const state = {
  file: null, run: 0, urls: [],
  // the viewer: the original (a) under the selected result (b); zoom "fit" or a factor
  view: { zoom: "auto", scale: 1, wipe: 0.5, mode: "wipe", b: "aec", sources: {}, labels: {} },
};

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").dataset.state = kind;
}

function show(id, value, text) {
  const el = $(id);
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.textContent = text;
}

const bytes = (n) => Number(n).toLocaleString("en-US");
const dB = (psnr) => (psnr === null || psnr === undefined ? "\u221e (exact)" : `${psnr.toFixed(2)} dB`);

function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  return url;
}

function apiHeaders(extra) {
  const headers = Object.assign({}, extra);
  const key = $("api-key").value.trim();
  if (key) headers["X-API-Key"] = key;
  return headers;
}

function modelQuery(extra, withQuality) {
  const [name, version] = ($("model").value || "").split("@");
  const params = new URLSearchParams(extra || {});
  if (name) params.set("model", name);
  if (version) params.set("version", version);
  if (withQuality && !$("quality-control").hidden) params.set("quality", $("quality").value);
  return params.toString();
}

async function call(path, body, contentType, accept) {
  const response = await fetch(path, {
    method: "POST", body,
    headers: apiHeaders({ "Content-Type": contentType, "Accept": accept }),
  });
  if (!response.ok) {
    let error = { code: "http_" + response.status, message: response.statusText };
    try { error = (await response.json()).error || error; } catch (_) { /* not JSON */ }
    const failure = new Error(`${path.split("?")[0]}: ${error.message} (${error.code})`);
    failure.code = error.code;
    throw failure;
  }
  return response;
}

// ---- models ---------------------------------------------------------------------------------------
async function loadModels() {
  const select = $("model");
  try {
    const response = await fetch("models", { headers: apiHeaders({ Accept: "application/json" }) });
    if (!response.ok) throw new Error((await response.json()).error.message);
    const listing = await response.json();
    select.replaceChildren();
    for (const model of listing.models) {
      for (const version of model.versions.filter((v) => v.state === "available")) {
        const option = document.createElement("option");
        option.value = `${model.name}@${version.version}`;
        const size = version.input.any_size ? "any size" : `${version.input.width}x${version.input.height}`;
        option.textContent = `${model.name} v${version.version} (${version.architecture}, ${size})`;
        option.dataset.calibrated = String(version.anomaly_threshold !== null);
        if (version.rate) option.dataset.rate = JSON.stringify(version.rate);
        option.selected = model.is_default && version.version === model.default_version;
        select.append(option);
      }
    }
    if (!select.options.length) setStatus("No model is loaded; see GET /models.", "error");
    else setStatus("Pick an image.", "idle");
    describeModel();
  } catch (error) {
    setStatus(`Cannot list models: ${error.message}`, "error");
  }
}

function describeModel() {
  const option = $("model").selectedOptions[0];
  const notes = [];
  if (option && option.dataset.calibrated === "false") notes.push("no calibrated anomaly threshold: no verdict");
  // variable-rate models: a quality slider over their range, at their default (the control keeps its
  // place in the header either way: hidden only makes it invisible)
  const rate = option && option.dataset.rate ? JSON.parse(option.dataset.rate) : null;
  $("quality-control").hidden = !rate;
  if (rate) {
    Object.assign($("quality"), { min: 1, max: rate.lmbdas.length, value: rate.default_quality });
    $("quality-value").textContent = Number($("quality").value).toFixed(2);
  } else if (option) {
    notes.push("single-rate model");
  }
  $("model-info").textContent = notes.join("; ");
  $("model-info").title = notes.join("; ");
}

// ---- clearing -------------------------------------------------------------------------------------
function clearResults() {
  for (const id of ["bpp", "stream-bytes", "ratio", "psnr", "ms-ssim", "mse", "score", "threshold", "verdict", "best",
    "quality-used"]) show(id, null, "\u2013");
  $("best-detail").textContent = "of aecodec, JPEG, WebP, AVIF";
  $("verdict").removeAttribute("data-anomaly");
  for (const id of ["reconstruction", "heatmap", "view-b"]) $(id).removeAttribute("src");
  $("reconstruction-caption").textContent = "";
  $("heatmap-caption").textContent = "at the chosen quality";
  for (const id of ["download-stream", "download-reconstruction"]) {
    const link = $(id);
    link.removeAttribute("href");
    link.removeAttribute("download");
    link.setAttribute("aria-disabled", "true");
  }
  $("compare-tiles").replaceChildren();
  $("compare-status").dataset.state = "idle";
  state.view.sources = {};
  state.view.labels = {};
  for (const option of $("view-b-source").options) option.disabled = option.value !== "aec";
  renderView();
}

function clearAll() {
  state.view.b = "aec";
  $("view-b-source").value = "aec";
  $("viewer-empty").textContent = EMPTY_VIEW;
  clearResults();
  $("original").removeAttribute("src");
  $("original-caption").textContent = "";
  show("file-bytes", null, "\u2013");
  show("dimensions", null, "\u2013");
  for (const url of state.urls) URL.revokeObjectURL(url);
  state.urls = [];
  state.view.zoom = "auto";
  renderView();
}

function offer(id, url, filename) {
  const link = $(id);
  link.href = url;
  link.download = filename;
  link.setAttribute("aria-disabled", "false");
}

function baseName() {
  const name = (state.file && state.file.name) || "image";
  return name.replace(/\.[^.]+$/, "") || "image";
}

// ---- one image through the API ---------------------------------------------------------------------
async function process() {
  const file = state.file;
  if (!file || !$("model").value) return;
  const run = ++state.run;
  clearResults();
  if (!$("original").getAttribute("src")) showOriginal(file); // after a failure cleared it
  setStatus(`Compressing ${file.name}\u2026`, "working");
  const type = file.type || "application/octet-stream";
  const option = $("model").selectedOptions[0];
  const calibrated = option.dataset.calibrated === "true";
  try {
    const encoded = await call(`encode?${modelQuery({}, true)}`, file, type, "application/octet-stream");
    const stream = await encoded.arrayBuffer();
    if (run !== state.run) return;
    const width = Number(encoded.headers.get("X-Original-Width"));
    const height = Number(encoded.headers.get("X-Original-Height"));
    const bpp = Number(encoded.headers.get("X-Bpp"));
    const quality = encoded.headers.get("X-Quality");
    const suffix = quality ? `.q${quality}` : "";
    offer("download-stream", objectUrl(new Blob([stream], { type: "application/octet-stream" })),
      `${baseName()}${suffix}.aec`);
    show("bpp", bpp, bpp.toFixed(4));
    show("stream-bytes", stream.byteLength, bytes(stream.byteLength));
    const ratio = file.size / stream.byteLength;
    show("ratio", ratio, `${ratio.toFixed(2)} : 1`);
    show("quality-used", quality, quality ? quality : "single rate");
    show("dimensions", `${width}x${height}`, `${width}\u00d7${height}`);
    setStatus(`Decoding and comparing ${file.name}\u2026`, "working");

    const decoding = call("decode", stream, "application/octet-stream", "image/png").then((r) => r.blob())
      .then((blob) => {
        if (run !== state.run) return;
        const url = objectUrl(blob);
        $("reconstruction").src = url;
        offer("download-reconstruction", url, `${baseName()}${suffix}.aecodec.png`);
        $("reconstruction-caption").textContent = `${width}\u00d7${height} from ${bytes(stream.byteLength)} B`;
        setSource("aec", url, `aecodec${quality ? " q" + quality : ""} \u00b7 ${bytes(stream.byteLength)} B`);
      });
    const measuring = call(`reconstruct?${modelQuery({}, true)}`, file, type, "image/png").then((r) => {
      if (run !== state.run) return;
      const psnr = r.headers.get("X-PSNR");
      const mse = Number(r.headers.get("X-MSE"));
      show("psnr", psnr === "inf" ? Infinity : Number(psnr), psnr === "inf" ? "\u221e (exact)" : `${Number(psnr).toFixed(2)} dB`);
      show("mse", mse, mse.toExponential(3));
      const msssim = r.headers.get("X-MS-SSIM");
      if (msssim !== null) show("ms-ssim", Number(msssim), Number(msssim).toFixed(4));
    });
    const scoring = calibrated
      ? call(`anomaly-score?${modelQuery({})}`, file, type, "application/json").then((r) => r.json()).then((scored) => {
        if (run !== state.run) return;
        show("score", scored.score, scored.score.toPrecision(3));
        show("threshold", scored.threshold, scored.threshold.toPrecision(3));
        show("verdict", scored.is_anomaly, scored.is_anomaly ? "Anomalous" : "Normal");
        $("verdict").title = scored.is_anomaly ? "score above the calibrated threshold" : "score at or below the calibrated threshold";
        $("verdict").dataset.anomaly = String(scored.is_anomaly);
      })
      : Promise.resolve().then(() => {
        show("verdict", null, "No threshold");
        $("verdict").title = "this model has no calibrated anomaly threshold";
      });
    // The comparison is the slow part (each classic codec encodes the image ~8 times): its own status,
    // and its failure (an image too big to compare, say) leaves the rest of the page standing.
    $("compare-status").dataset.state = "working";
    $("compare-status").textContent = "Fitting JPEG, WebP and AVIF to the bitstream's bytes on the server\u2026";
    const comparing = call(`compare?${modelQuery({ heatmap: "true" }, true)}`, file, type, "application/json")
      .then((r) => r.json()).then((result) => { if (run === state.run) showComparison(result); })
      .catch((error) => {
        if (run !== state.run) return;
        $("compare-status").dataset.state = "error";
        $("compare-status").textContent = `No comparison: ${error.message}`;
      });
    await Promise.all([decoding, measuring, scoring]);
    await comparing;
    if (run !== state.run) return;
    setStatus(`Done: ${file.name} (${width}\u00d7${height}) with ${option.textContent}`
      + (quality ? ` at quality ${quality}.` : "."), "done");
  } catch (error) {
    if (run !== state.run) return;
    // a failed upload leaves nothing of the previous image on the page: only the error
    clearAll();
    setStatus(error.message, "error");
    $("viewer-empty").textContent = `Nothing to show: ${file.name} could not be compressed (the error is above).`;
  }
}

// ---- the comparison --------------------------------------------------------------------------------
function showComparison(result) {
  const ours = result.codecs.find((c) => c.codec === "aec");
  const tiles = $("compare-tiles");
  tiles.replaceChildren();
  for (const entry of result.codecs) tiles.append(tile(entry, ours));
  if (result.heatmap) {
    $("heatmap").src = `data:image/png;base64,${result.heatmap}`;
    $("heatmap-caption").textContent = result.quality === null ? "at the model's rate" : `at quality ${result.quality.toFixed(2)}`;
    setSource("heatmap", $("heatmap").src, `heat map${result.quality === null ? "" : " q" + result.quality.toFixed(2)}`);
  }
  const fitting = result.codecs.filter((c) => c.available && c.fits);
  const ranked = fitting.slice().sort((a, b) => (b.psnr ?? Infinity) - (a.psnr ?? Infinity)
    || (a.codec === "aec" ? -1 : 1));
  const best = ranked[0];
  show("best", best.codec, CODEC_NAMES[best.codec]);
  const runnerUp = ranked[1];
  const gap = (a, b) => (a.psnr === null || b.psnr === null ? "" : ` by ${(a.psnr - b.psnr).toFixed(2)} dB`);
  $("best-detail").textContent = best.codec !== "aec" ? `ahead of aecodec${gap(best, ours)}`
    : runnerUp ? `ahead of ${CODEC_NAMES[runnerUp.codec]}${gap(best, runnerUp)}` : "the only one that fits";
  $("best-detail").title = ranked.map((c) => `${CODEC_NAMES[c.codec]} ${dB(c.psnr)}`).join(", ");
  const missing = result.codecs.filter((c) => !c.available).map((c) => CODEC_NAMES[c.codec]);
  const over = result.codecs.filter((c) => c.available && c.fits === false).map((c) => CODEC_NAMES[c.codec]);
  $("compare-status").dataset.state = "done";
  $("compare-status").textContent = `Each at most ${bytes(result.target_bytes)} B, the bitstream's size `
    + `(${result.quality === null ? "single-rate model" : "quality " + result.quality.toFixed(2)}). `
    + (over.length ? `${over.join(", ")} cannot go that small: shown at its lowest quality. ` : "")
    + (missing.length ? `${missing.join(", ")} unavailable on this server. ` : "")
    + "PSNR of each decoded 8-bit file against the upload. Click one to wipe against it.";
  renderView();
}

function tile(entry, ours) {
  const figure = document.createElement("figure");
  figure.className = "tile";
  figure.dataset.codec = entry.codec;
  const name = CODEC_NAMES[entry.codec];
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  const img = document.createElement("img");
  img.alt = name;
  button.append(img);
  const caption = document.createElement("figcaption");
  figure.append(button, caption);
  if (!entry.available) {
    figure.dataset.state = "unavailable";
    button.disabled = true;
    caption.innerHTML = `<b>${name}</b> unavailable<br>`;
    caption.append(entry.reason || "this server cannot write it");
    return figure;
  }
  figure.dataset.state = entry.fits ? "ok" : "nofit";
  figure.dataset.bytes = String(entry.bytes);
  figure.dataset.quality = String(entry.quality);
  figure.dataset.psnr = entry.psnr === null ? "inf" : String(entry.psnr);
  const quality = entry.codec === "aec" ? Number(entry.quality ?? NaN) : entry.quality;
  const q = Number.isNaN(quality) || quality === null ? "" : ` q ${entry.codec === "aec" ? quality.toFixed(2) : quality}`;
  let delta = "";
  if (entry.codec !== "aec" && entry.psnr !== null && ours.psnr !== null) {
    const d = entry.psnr - ours.psnr;
    delta = `<span class="delta" data-sign="${d > 0 ? "better" : "worse"}">${d >= 0 ? "+" : "\u2212"}${Math.abs(d).toFixed(2)} dB vs ours</span>`;
  } else if (entry.codec === "aec") {
    delta = "<span class=\"note\">ours</span>";
  }
  const fitNote = entry.fits === false ? `<br><span class="note">over budget: its smallest file</span>`
    : entry.at_max_quality ? `<br><span class="note">at its top quality</span>` : "";
  caption.innerHTML = `<b>${name}</b>${q} \u00b7 ${bytes(entry.bytes)} B \u00b7 ${entry.bpp.toFixed(3)} bpp<br>`
    + `<span class="psnr">${dB(entry.psnr)}</span> ${delta}`
    + (entry.ms_ssim !== null && entry.ms_ssim !== undefined ? ` \u00b7 MS-SSIM ${entry.ms_ssim.toFixed(4)}` : "") + fitNote;
  caption.title = entry.settings;
  const label = `${name}${q} \u00b7 ${bytes(entry.bytes)} B \u00b7 ${dB(entry.psnr)}`;
  if (entry.codec === "aec") {
    state.view.labels.aec = label;
    if (state.view.sources.aec) img.src = state.view.sources.aec;
    else $("reconstruction").addEventListener("load", () => { img.src = $("reconstruction").src; }, { once: true });
  } else {
    img.src = `data:${entry.media_type};base64,${entry.image}`;
    setSource(entry.codec, img.src, label);
  }
  button.setAttribute("aria-label", `wipe the original against ${name}`);
  button.addEventListener("click", () => selectB(entry.codec));
  if (state.view.b === entry.codec) figure.dataset.selected = "true";
  return figure;
}

// ---- the viewer ------------------------------------------------------------------------------------
function setSource(key, url, label) {
  state.view.sources[key] = url;
  if (!state.view.labels[key] || key !== "aec") state.view.labels[key] = label;
  const option = [...$("view-b-source").options].find((o) => o.value === key);
  if (option) option.disabled = false;
  renderView();
}

function selectB(key) {
  if (!state.view.sources[key]) return;
  state.view.b = key;
  $("view-b-source").value = key;
  if (state.view.mode === "a") state.view.mode = "wipe";
  for (const figure of $("compare-tiles").children) figure.dataset.selected = String(figure.dataset.codec === key);
  renderView();
}

function fitScale() {
  const img = $("original");
  const viewer = $("viewer");
  if (!img.naturalWidth) return 1;
  return Math.min(viewer.clientWidth / img.naturalWidth, viewer.clientHeight / img.naturalHeight);
}

function renderView() {
  const view = state.view;
  const viewer = $("viewer");
  const img = $("original");
  const b = $("view-b");
  const url = view.sources[view.b];
  if (url) { if (b.getAttribute("src") !== url) b.src = url; } else b.removeAttribute("src");
  const empty = !img.getAttribute("src") || !img.naturalWidth;
  viewer.dataset.empty = String(empty);
  viewer.dataset.mode = view.mode;
  $("tag-a").textContent = empty ? "" : "Original";
  $("tag-b").textContent = url ? view.labels[view.b] || CODEC_NAMES[view.b] : "";
  $("tag-a").style.visibility = view.mode === "b" ? "hidden" : "";
  $("tag-b").style.visibility = view.mode === "a" ? "hidden" : "";
  $("view-b").alt = CODEC_NAMES[view.b];
  const stage = $("stage");
  if (empty) {
    stage.style.width = stage.style.height = "0px";
    $("zoom-level").textContent = "";
    markZoom();
    return;
  }
  const fit = fitScale();
  let scale;
  if (view.zoom === "auto") scale = fit >= 1 ? Math.max(1, Math.floor(fit)) : fit; // whole pixels when it fits
  else if (view.zoom === "fit") scale = fit;
  else scale = Number(view.zoom);
  view.scale = scale;
  stage.style.width = `${Math.round(img.naturalWidth * scale)}px`;
  stage.style.height = `${Math.round(img.naturalHeight * scale)}px`;
  stage.classList.toggle("pixelated", scale >= 2);
  $("zoom-level").textContent = `${Math.round(scale * 100)}%`;
  markZoom();
  placeWipe();
}

function markZoom() {
  for (const button of document.querySelectorAll("[data-zoom]")) {
    const pressed = button.dataset.zoom === String(state.view.zoom)
      || (state.view.zoom === "auto" && Number(button.dataset.zoom) === state.view.scale);
    button.setAttribute("aria-pressed", String(pressed));
  }
}

// The wipe sits at a fraction of the visible width, so it stays in view while a zoomed image is panned.
function placeWipe() {
  const viewer = $("viewer");
  const stage = $("stage");
  const view = state.view;
  const width = stage.offsetWidth;
  let x = viewer.scrollLeft + view.wipe * viewer.clientWidth - stage.offsetLeft;
  x = Math.max(0, Math.min(width, x));
  const clip = view.mode === "b" ? 0 : view.mode === "a" ? width : x;
  $("view-b").style.clipPath = `inset(0 0 0 ${clip}px)`;
  $("wipe-line").style.left = `${x}px`;
  $("wipe").value = String(Math.round(view.wipe * 200) / 2);
}

function setZoom(zoom) {
  const viewer = $("viewer");
  // keep the point at the centre of the view where it is
  const cx = (viewer.scrollLeft + viewer.clientWidth / 2) / Math.max(1, viewer.scrollWidth);
  const cy = (viewer.scrollTop + viewer.clientHeight / 2) / Math.max(1, viewer.scrollHeight);
  state.view.zoom = zoom;
  renderView();
  viewer.scrollLeft = cx * viewer.scrollWidth - viewer.clientWidth / 2;
  viewer.scrollTop = cy * viewer.scrollHeight - viewer.clientHeight / 2;
  placeWipe();
}

function setWipe(fraction) {
  state.view.wipe = Math.max(0, Math.min(1, fraction));
  state.view.mode = "wipe";
  $("viewer").dataset.mode = "wipe";
  $("tag-a").style.visibility = $("tag-b").style.visibility = "";
  placeWipe();
}

function flip() {
  state.view.mode = state.view.mode === "b" ? "a" : "b";
  renderView();
}

// ---- picking a file --------------------------------------------------------------------------------
function pick(file) {
  if (!file) return;
  clearAll();
  state.file = file;
  showOriginal(file);
  process();
}

function showOriginal(file) {
  show("file-bytes", file.size, bytes(file.size));
  const img = $("original");
  img.onload = () => {
    $("original-caption").textContent = `${img.naturalWidth}\u00d7${img.naturalHeight}, ${bytes(file.size)} B`;
    renderView();
  };
  img.onerror = () => {
    // not an image this browser shows (a TIFF, or not an image at all): nothing broken on the page;
    // the service says what it makes of it
    img.removeAttribute("src");
    $("original-caption").textContent = "(this browser cannot display the file)";
    renderView();
  };
  img.src = objectUrl(file);
}

$("file").addEventListener("change", (event) => pick(event.target.files[0]));
$("model").addEventListener("change", () => { describeModel(); process(); });
$("api-key").addEventListener("change", loadModels);
$("quality").addEventListener("input", () => { $("quality-value").textContent = Number($("quality").value).toFixed(2); });
$("quality").addEventListener("change", process);
for (const button of document.querySelectorAll("[data-zoom]")) {
  button.addEventListener("click", () => setZoom(button.dataset.zoom === "fit" ? "fit" : Number(button.dataset.zoom)));
}
$("view-b-source").addEventListener("change", (event) => selectB(event.target.value));
$("wipe").addEventListener("input", (event) => setWipe(Number(event.target.value) / 100));
$("flip").addEventListener("click", flip);
const viewer = $("viewer");
viewer.addEventListener("scroll", placeWipe);
viewer.addEventListener("keydown", (event) => {
  if (event.key === "f" || event.key === "F") { flip(); event.preventDefault(); }
  if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
    setWipe(state.view.wipe + (event.key === "ArrowLeft" ? -0.02 : 0.02));
    event.preventDefault();
  }
});
// mouse and pen drag the wipe; touch scrolls (the Wipe slider works everywhere)
let dragging = false;
const wipeAt = (event) => {
  const box = viewer.getBoundingClientRect();
  setWipe((event.clientX - box.left) / viewer.clientWidth);
};
viewer.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "touch" || event.button !== 0 || viewer.dataset.empty === "true") return;
  dragging = true;
  viewer.setPointerCapture(event.pointerId);
  wipeAt(event);
});
viewer.addEventListener("pointermove", (event) => { if (dragging) wipeAt(event); });
viewer.addEventListener("pointerup", () => { dragging = false; });
viewer.addEventListener("pointercancel", () => { dragging = false; });
window.addEventListener("resize", renderView);
document.body.addEventListener("dragover", (event) => { event.preventDefault(); document.body.classList.add("over"); });
document.body.addEventListener("dragleave", (event) => {
  if (event.target === document.body || !document.body.contains(event.relatedTarget)) document.body.classList.remove("over");
});
document.body.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("over");
  pick(event.dataTransfer.files[0]);
});
renderView();
loadModels();
