// The demo page: one image through /encode -> /decode, /reconstruct and /anomaly-score, figures shown.
// Plain browser JavaScript, no build step. Paths are relative so the page also works behind a prefix.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, run: 0 };

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").dataset.state = kind;
}

function show(id, value, text) {
  const el = $(id);
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.textContent = text;
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
  $("model-info").textContent = option && option.dataset.calibrated === "false"
    ? "no calibrated anomaly threshold: no verdict for this model" : "";
  // variable-rate models: a quality slider over their range, at their default
  const rate = option && option.dataset.rate ? JSON.parse(option.dataset.rate) : null;
  $("quality-control").hidden = !rate;
  if (rate) {
    Object.assign($("quality"), { min: 1, max: rate.lmbdas.length, value: rate.default_quality });
    $("quality-value").textContent = Number($("quality").value).toFixed(2);
  }
}

function reset() {
  for (const id of ["bpp", "stream-bytes", "ratio", "psnr", "mse", "score", "threshold", "verdict"]) show(id, null, "\u2013");
  $("verdict").removeAttribute("data-anomaly");
  for (const id of ["reconstruction", "heatmap"]) {
    const img = $(id);
    if (img.src) URL.revokeObjectURL(img.src);
    img.removeAttribute("src");
  }
  $("reconstruction-caption").textContent = "";
}

async function process() {
  const file = state.file;
  if (!file || !$("model").value) return;
  const run = ++state.run;
  reset();
  setStatus(`Compressing ${file.name}\u2026`, "working");
  const type = file.type || "application/octet-stream";
  try {
    const encoded = await call(`encode?${modelQuery({}, true)}`, file, type, "application/octet-stream");
    const stream = await encoded.arrayBuffer();
    const width = Number(encoded.headers.get("X-Original-Width"));
    const height = Number(encoded.headers.get("X-Original-Height"));
    const bpp = Number(encoded.headers.get("X-Bpp"));
    const ratio = file.size / stream.byteLength;
    const calibrated = $("model").selectedOptions[0].dataset.calibrated === "true";
    const [decoded, reconstructed, scored] = await Promise.all([
      call("decode", stream, "application/octet-stream", "image/png").then((r) => r.blob()),
      call(`reconstruct?${modelQuery({}, true)}`, file, type, "image/png"),
      calibrated ? call(`anomaly-score?${modelQuery({ heatmap: "true" })}`, file, type, "application/json")
        .then((r) => r.json()) : Promise.resolve(null),
    ]);
    if (run !== state.run) return; // a newer image was picked meanwhile
    $("reconstruction").src = URL.createObjectURL(decoded);
    $("reconstruction-caption").textContent = `${width}\u00d7${height}, from ${stream.byteLength} B`;
    show("bpp", bpp, bpp.toFixed(4));
    show("stream-bytes", stream.byteLength, String(stream.byteLength));
    show("ratio", ratio, `${ratio.toFixed(2)} : 1`);
    const psnr = reconstructed.headers.get("X-PSNR");
    const mse = Number(reconstructed.headers.get("X-MSE"));
    show("psnr", psnr === "inf" ? Infinity : Number(psnr), psnr === "inf" ? "\u221e (exact)" : `${Number(psnr).toFixed(2)} dB`);
    show("mse", mse, mse.toExponential(3));
    if (scored) {
      $("heatmap").src = `data:image/png;base64,${scored.heatmap}`;
      show("score", scored.score, scored.score.toPrecision(5));
      show("threshold", scored.threshold, scored.threshold.toPrecision(5));
      show("verdict", scored.is_anomaly, scored.is_anomaly ? "Anomalous (score above threshold)" : "Normal (score at or below threshold)");
      $("verdict").dataset.anomaly = String(scored.is_anomaly);
    } else {
      show("verdict", null, "No calibrated threshold for this model");
    }
    const quality = encoded.headers.get("X-Quality");
    setStatus(`Done: ${file.name} (${width}\u00d7${height}) with ${$("model").selectedOptions[0].textContent}`
      + (quality ? ` at quality ${quality}.` : "."), "done");
  } catch (error) {
    if (run === state.run) setStatus(error.message, "error");
  }
}

function pick(file) {
  if (!file) return;
  state.file = file;
  const img = $("original");
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(file);
  show("file-bytes", file.size, String(file.size));
  img.onload = () => { $("original-caption").textContent = `${img.naturalWidth}\u00d7${img.naturalHeight}, ${file.size} B`; };
  process();
}

$("file").addEventListener("change", (event) => pick(event.target.files[0]));
$("model").addEventListener("change", () => { describeModel(); process(); });
$("api-key").addEventListener("change", loadModels);
$("quality").addEventListener("input", () => { $("quality-value").textContent = Number($("quality").value).toFixed(2); });
$("quality").addEventListener("change", process);
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  pick(event.dataTransfer.files[0]);
});
loadModels();
