// imagegate playground: plain JavaScript, no build step, nothing loaded from elsewhere.
// It talks to the same OpenAI-compatible API as any client (/v1/images/*, /v1/models),
// plus /playground/api/history to keep the session's images in the server's store.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = "imagegate.key";
  const HISTORY = "imagegate.history";
  const MAX_SEED = 2 ** 31 - 1;
  const EXT_PARAMS = ["seed", "negative_prompt", "num_inference_steps", "guidance_scale", "aspect_ratio", "resolution"];

  const state = {
    mode: "generate",
    key: sessionStorage.getItem(KEY) || "",
    models: [], // [{id, alias_of}]
    inputs: [], // [{blob, name, url}]
    controllers: [],
    history: loadHistory(),
    usage: false,
  };

  // -- the API -----------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(message, status, error) {
      super(message);
      this.status = status;
      this.error = error || {};
    }
  }

  function readable(body, status, headers) {
    const err = (body && body.error) || {};
    let msg = typeof err.message === "string" && err.message ? err.message : `The server answered HTTP ${status}.`;
    const retry = headers && (headers.get("retry-after-ms") ? Math.ceil(Number(headers.get("retry-after-ms")) / 1000)
      : headers.get("retry-after"));
    if (err.code === "moderation_blocked") {
      const d = err.moderation_details || {};
      const cats = Array.isArray(d.categories) && d.categories.length ? ` Categories: ${d.categories.join(", ")}.` : "";
      msg = `Blocked by moderation${d.moderation_stage ? ` (${d.moderation_stage})` : ""}: ${msg}${cats}`;
    } else if (status === 429) {
      msg = `Limit reached: ${msg}${retry ? ` Try again in ${retry} s.` : ""}`;
    } else if (status === 503) {
      msg = `The server is busy: ${msg}${retry ? ` Try again in ${retry} s.` : ""}`;
    } else if (status === 401) {
      msg = `API key needed: ${msg}`;
    } else if (status >= 500) {
      msg = `Server error: ${msg}`;
    }
    if (err.param && !msg.includes(err.param)) msg += ` (parameter: ${err.param})`;
    return msg;
  }

  async function errorOf(resp) {
    let body = null;
    try { body = await resp.json(); } catch (_) { /* not JSON: say the status */ }
    return new ApiError(readable(body, resp.status, resp.headers), resp.status, body && body.error);
  }

  async function api(path, opts = {}) {
    for (let attempt = 0; ; attempt++) {
      const headers = new Headers(opts.headers || {});
      if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
      const resp = await fetch(path, { ...opts, headers });
      if (resp.status === 401 && attempt < 5) { // ask for a key (again), then send the same request
        const err = await errorOf(resp);
        const key = await askKey(state.key ? `That key was refused: ${err.error.message || err.message}` : null);
        if (key) continue;
        throw err;
      }
      if (!resp.ok) throw await errorOf(resp);
      return resp;
    }
  }

  // Server-sent events from a fetch() body: `data:` lines, events split by a blank line.
  async function* events(resp) {
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      // normalised on the whole buffer, so a "\r\n" split across two reads is still one line end
      buf = (buf + value).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const chunk = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (data) yield JSON.parse(data);
      }
    }
  }

  // -- the key -----------------------------------------------------------------------------
  let keyWaiters = []; // every request waiting on the dialog (compare mode sends two)
  function askKey(why) {
    const dlg = $("key-dialog");
    $("key-why").textContent = why || "This server needs an API key. It is kept in this tab's session storage only.";
    $("key-input").value = state.key;
    if (!dlg.open) dlg.showModal();
    $("key-input").focus();
    return new Promise((resolve) => { keyWaiters.push(resolve); });
  }
  function setKey(key) {
    state.key = key;
    if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
    $("key-state").textContent = key ? "set" : "none";
  }
  $("key-dialog").addEventListener("close", () => {
    const how = $("key-dialog").returnValue;
    if (how === "save" && $("key-input").value.trim()) setKey($("key-input").value.trim());
    if (how === "forget") setKey("");
    const waiting = keyWaiters;
    keyWaiters = [];
    for (const w of waiting) w(how === "save" ? state.key : null);
  });
  $("key-button").addEventListener("click", async () => {
    if (await askKey("Set the API key this page sends (kept in this tab's session storage only).")) boot();
  });

  // -- models ------------------------------------------------------------------------------
  function served(name) {
    const m = state.models.find((x) => x.id === name);
    return (m && m.alias_of) || name;
  }
  function fillModels(select, chosen) {
    select.textContent = "";
    const groups = [["Models", state.models.filter((m) => !m.alias_of)], ["Aliases", state.models.filter((m) => m.alias_of)]];
    for (const [label, list] of groups) {
      if (!list.length) continue;
      const g = document.createElement("optgroup");
      g.label = label;
      for (const m of list) {
        const o = new Option(m.alias_of ? `${m.id} (alias of ${m.alias_of})` : m.id, m.id);
        g.append(o);
      }
      select.append(g);
    }
    if (chosen && state.models.some((m) => m.id === chosen)) select.value = chosen;
  }
  async function loadModels() {
    const resp = await api("/v1/models");
    state.models = (await resp.json()).data.map((m) => ({ id: m.id, alias_of: m.alias_of || null }));
    const a = $("model").value, b = $("model-b").value;
    fillModels($("model"), a);
    fillModels($("model-b"), b);
    const locals = state.models.filter((m) => !m.alias_of);
    if (!b && locals.length > 1) $("model-b").value = locals[1].id;
  }

  // -- modes (tabs) ------------------------------------------------------------------------
  const tabs = [...document.querySelectorAll('.top [role="tab"]')];
  function setMode(mode) {
    state.mode = mode;
    for (const t of tabs) {
      const on = t.dataset.mode === mode;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
    }
    const studio = ["generate", "edit", "compare"].includes(mode);
    $("view-studio").hidden = !studio;
    $("view-history").hidden = mode !== "history";
    $("view-usage").hidden = mode !== "usage";
    $("view-studio").setAttribute("aria-labelledby", `tab-${studio ? mode : "generate"}`);
    $("edit-inputs").hidden = mode !== "edit";
    $("model-b-field").hidden = mode !== "compare";
    $("run").textContent = { generate: "Generate", edit: "Edit", compare: "Compare" }[mode] || "Generate";
    // An edit keeps its input's size unless a size was chosen on purpose.
    if (!sizeChosen && studio) $("size").value = mode === "edit" ? "auto" : "512x512";
    if (mode === "history") renderHistory();
    if (mode === "usage") loadUsage();
  }
  tabs.forEach((t, i) => {
    t.addEventListener("click", () => setMode(t.dataset.mode));
    t.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      const visible = tabs.filter((x) => !x.hidden);
      const k = (visible.indexOf(t) + (e.key === "ArrowRight" ? 1 : -1) + visible.length) % visible.length;
      visible[k].focus();
      setMode(visible[k].dataset.mode);
    });
    t.tabIndex = i === 0 ? 0 : -1;
  });

  // -- the form ----------------------------------------------------------------------------
  document.querySelectorAll('input[name="size-mode"]').forEach((r) => r.addEventListener("change", () => {
    const bySize = document.querySelector('input[name="size-mode"]:checked').value === "size";
    $("size-by-size").hidden = !bySize;
    $("size-by-aspect").hidden = bySize;
  }));
  let sizeChosen = false;
  $("size").addEventListener("change", () => { sizeChosen = true; });
  function randomSeed() {
    const a = new Uint32Array(1);
    crypto.getRandomValues(a);
    return a[0] % MAX_SEED;
  }
  $("dice").addEventListener("click", () => { $("seed").value = randomSeed(); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("form").requestSubmit(); }
  });

  function intOf(id) { const v = $(id).value.trim(); return v === "" ? null : Number(v); }

  /** The request's parameters, exactly as sent (and as the code snippets repeat them). */
  function params(model) {
    if (!$("seed-lock").checked || $("seed").value.trim() === "") $("seed").value = randomSeed();
    const p = { model, prompt: $("prompt").value.trim(), n: intOf("n") || 1 };
    if (document.querySelector('input[name="size-mode"]:checked').value === "size") p.size = $("size").value;
    else { p.aspect_ratio = $("aspect").value; p.resolution = $("resolution").value; }
    p.quality = $("quality").value;
    p.output_format = $("format").value;
    if ($("transparent").checked) p.background = "transparent";
    p.seed = intOf("seed");
    if ($("negative").value.trim()) p.negative_prompt = $("negative").value.trim();
    if (intOf("steps") !== null) p.num_inference_steps = intOf("steps");
    if (intOf("guidance") !== null) p.guidance_scale = intOf("guidance");
    if ($("stream").checked) { p.stream = true; p.partial_images = intOf("partials") ?? 2; }
    return p;
  }

  function showError(msg) {
    $("error").textContent = msg || "";
    $("error").hidden = !msg;
  }

  // -- running requests --------------------------------------------------------------------
  function b64ToBlob(b64, type) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Blob([bytes], { type });
  }

  function card(label) {
    const el = document.createElement("article");
    el.className = "card partial";
    el.innerHTML = `<button type="button" class="frame" aria-label="Enlarge image"><img alt=""><span class="tag"></span></button>
      <dl class="meta"></dl><div class="buttons"></div>`;
    el.querySelector(".tag").textContent = label;
    el.querySelector(".frame").disabled = true;
    el.querySelector(".frame").addEventListener("click", () => enlarge(el.querySelector("img").src, el.querySelector("img").alt));
    return el;
  }
  function setImage(el, url, alt) {
    const img = el.querySelector("img");
    img.src = url;
    img.alt = alt;
    el.querySelector(".frame").disabled = false;
  }
  function enlarge(src, alt) {
    $("view-img").src = src;
    $("view-img").alt = alt || "";
    $("view-dialog").showModal();
  }

  /** One request (generation or edit) into `cards`: partial images as they stream in, then the finals. */
  async function runOne(task, p, inputs, mask, cards, signal) {
    const t0 = performance.now();
    let resp;
    if (task === "edit") {
      const form = new FormData();
      inputs.forEach((im) => form.append(inputs.length > 1 ? "image[]" : "image", im.blob, im.name));
      if (mask) form.append("mask", mask, "mask.png");
      for (const [k, v] of Object.entries(p)) form.append(k, String(v));
      resp = await api("/v1/images/edits", { method: "POST", body: form, signal });
    } else {
      resp = await api("/v1/images/generations", {
        method: "POST", body: JSON.stringify(p), signal, headers: { "content-type": "application/json" },
      });
    }
    const cost = Number(resp.headers.get("x-imagegate-cost-usd") || "NaN");
    const type = `image/${p.output_format}`;
    const finals = [];
    if (p.stream) {
      for await (const ev of events(resp)) {
        if (ev.error) throw new ApiError(readable(ev, 500, null), 500, ev.error);
        const i = finals.length;
        if (!cards[i]) continue;
        if (String(ev.type).endsWith("partial_image")) {
          setImage(cards[i], URL.createObjectURL(b64ToBlob(ev.b64_json, type)), `Partial image ${ev.partial_image_index + 1}`);
          cards[i].querySelector(".tag").textContent = `partial ${ev.partial_image_index + 1}`;
          cards[i].dataset.partials = String(Number(cards[i].dataset.partials || 0) + 1);
        } else if (String(ev.type).endsWith("completed")) {
          finals.push(b64ToBlob(ev.b64_json, type));
          finish(cards[i], finals[i], i);
        }
      }
    } else {
      const body = await resp.json();
      for (const [i, d] of body.data.entries()) {
        finals.push(d.b64_json ? b64ToBlob(d.b64_json, type) : await (await fetch(d.url)).blob());
        finish(cards[i], finals[i], i);
      }
    }
    if (finals.length < cards.length) throw new ApiError("The stream ended before every image arrived.", 0, null);

    function finish(el, blob, i) {
      const seconds = (performance.now() - t0) / 1000;
      const run = { task, params: p, inputs, mask, seed: p.seed != null ? p.seed + i : null };
      const item = { blob, url: URL.createObjectURL(blob), prompt: p.prompt, model: p.model, served: served(p.model),
        seed: run.seed, seconds, cost: Number.isFinite(cost) ? cost / cards.length : null, run };
      present(el, item);
      keep(item);
    }
  }

  function fmtCost(c) { return c == null ? "unknown" : c === 0 ? "free" : `$${c.toFixed(c < 0.01 ? 4 : 3)}`; }

  function present(el, item) {
    el.classList.remove("partial");
    el.querySelector(".tag").textContent = "final";
    setImage(el, item.url, `${item.prompt} (seed ${item.seed})`);
    const meta = el.querySelector(".meta");
    meta.textContent = "";
    const rows = [["time", item.seconds != null ? `${item.seconds.toFixed(1)} s` : "–"], ["seed", item.seed ?? "–"],
      ["model", item.served === item.model ? item.model : `${item.served} (as ${item.model})`], ["cost", fmtCost(item.cost)]];
    for (const [k, v] of rows) {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k; dd.textContent = String(v); dd.title = String(v);
      meta.append(dt, dd);
    }
    const buttons = el.querySelector(".buttons");
    buttons.textContent = "";
    const ext = item.run.params.output_format || "png";
    const a = document.createElement("a");
    a.href = item.url;
    a.download = `imagegate-${item.seed ?? "image"}.${ext}`;
    a.textContent = "Download";
    a.className = "download";
    const use = button("Use as input", async () => {
      const blob = item.blob || await (await fetch(item.url)).blob();
      addInputs([new File([blob], `input.${ext}`, { type: blob.type || `image/${ext}` })], true);
      setMode("edit");
      $("prompt").focus();
    });
    const code = button("Copy as code", () => showCode(item.run));
    code.className = "copy-code";
    buttons.append(a, use, code);
  }
  function button(text, onclick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.addEventListener("click", onclick);
    return b;
  }

  let ticker = null;
  function busy(on, label) {
    $("run").disabled = on;
    $("cancel").hidden = !on;
    clearInterval(ticker);
    if (on) {
      const t0 = performance.now();
      const tick = () => { $("status").textContent = `${label}… ${((performance.now() - t0) / 1000).toFixed(1)} s`; };
      tick();
      ticker = setInterval(tick, 100);
    }
  }

  $("cancel").addEventListener("click", () => state.controllers.forEach((c) => c.abort()));

  $("form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError("");
    $("status").textContent = "";
    if (!$("prompt").value.trim()) { showError("Write a prompt first."); $("prompt").focus(); return; }
    const mode = state.mode;
    if (mode === "edit" && !state.inputs.length) { showError("Add an image to edit first."); $("drop").focus(); return; }
    const models = mode === "compare" ? [$("model").value, $("model-b").value] : [$("model").value];
    const p0 = params(models[0]);
    const task = mode === "edit" ? "edit" : "generate";
    const inputs = task === "edit" ? [...state.inputs] : [];
    const mask = task === "edit" ? await buildMask() : null;
    const n = p0.n;
    const row = document.createElement("div");
    row.className = mode === "compare" ? "compare-row" : "run-row";
    const columns = models.map((m) => {
      const col = document.createElement("div");
      if (mode === "compare") {
        const h = document.createElement("h3");
        h.textContent = m === served(m) ? m : `${m} (${served(m)})`;
        col.append(h);
        col.className = "grid";
      }
      const cards = Array.from({ length: n }, () => card("waiting"));
      col.append(...cards);
      return { model: m, col, cards };
    });
    if (mode === "compare") row.append(...columns.map((c) => c.col));
    else row.append(...columns[0].cards);
    $("results").prepend(row);
    $("empty").hidden = true;
    state.controllers = models.map(() => new AbortController());
    busy(true, { generate: "Generating", edit: "Editing", compare: "Comparing" }[mode]);
    const outcomes = await Promise.allSettled(columns.map((c, k) =>
      runOne(task, { ...p0, model: c.model }, inputs, mask, c.cards, state.controllers[k].signal)));
    busy(false);
    const failed = outcomes.map((o, k) => [o, columns[k]]).filter(([o]) => o.status === "rejected");
    for (const [o, c] of failed) {
      const aborted = o.reason && o.reason.name === "AbortError";
      const msg = aborted ? "Cancelled." : o.reason instanceof ApiError ? o.reason.message : `Could not reach the server: ${o.reason}`;
      for (const el of c.cards) if (el.classList.contains("partial")) el.remove();
      if (mode === "compare") {
        const div = document.createElement("div");
        div.className = "error";
        div.setAttribute("role", "alert");
        div.textContent = msg;
        c.col.append(div);
      } else showError(msg);
    }
    if (!row.querySelector(".card") && mode !== "compare") row.remove();
    $("empty").hidden = !!$("results").querySelector(".card, .error");
    $("status").textContent = failed.length ? "" : "Done.";
  });

  // -- edit inputs and the mask ------------------------------------------------------------
  const paint = $("mask-paint"), under = $("mask-image");
  const pctx = paint.getContext("2d", { willReadFrequently: true });
  let undo = [], drawing = false, last = null;

  function addInputs(files, first) {
    const imgs = [...files].filter((f) => f.type.startsWith("image/"));
    if (!imgs.length) return;
    const items = imgs.map((f, i) => ({ blob: f, name: f.name || `image-${i + 1}.png`, url: URL.createObjectURL(f) }));
    state.inputs = first ? [...items, ...state.inputs] : [...state.inputs, ...items];
    renderInputs(first || state.inputs.length === items.length);
  }
  function renderInputs(firstChanged) {
    const ul = $("thumbs");
    ul.textContent = "";
    state.inputs.forEach((im, i) => {
      const li = document.createElement("li");
      const img = document.createElement("img");
      img.src = im.url;
      img.alt = `Input ${i + 1}${i === 0 ? " (masked)" : ""}`;
      const rm = button("×", () => { state.inputs.splice(i, 1); renderInputs(i === 0); });
      rm.setAttribute("aria-label", `Remove input ${i + 1}`);
      li.append(img, rm);
      ul.append(li);
    });
    $("mask-editor").hidden = !state.inputs.length;
    if (firstChanged && state.inputs.length) loadMaskImage(state.inputs[0].blob);
  }
  async function loadMaskImage(blob) {
    const bmp = await createImageBitmap(blob);
    for (const c of [under, paint]) { c.width = bmp.width; c.height = bmp.height; }
    under.getContext("2d").drawImage(bmp, 0, 0);
    undo = [];
    maskChanged();
  }
  function snapshot() {
    undo.push(pctx.getImageData(0, 0, paint.width, paint.height));
    if (undo.length > 30) undo.shift();
  }
  function scale() { return paint.width / paint.getBoundingClientRect().width; }
  function at(e) {
    const r = paint.getBoundingClientRect();
    return [(e.clientX - r.left) * (paint.width / r.width), (e.clientY - r.top) * (paint.height / r.height)];
  }
  function stroke(from, to) {
    pctx.globalCompositeOperation = $("eraser").getAttribute("aria-pressed") === "true" ? "destination-out" : "source-over";
    pctx.strokeStyle = pctx.fillStyle = "#ff2d55";
    pctx.lineCap = pctx.lineJoin = "round";
    pctx.lineWidth = Number($("brush").value) * scale();
    pctx.beginPath();
    pctx.moveTo(...from);
    pctx.lineTo(...to);
    pctx.stroke();
  }
  paint.addEventListener("pointerdown", (e) => {
    if (!paint.width) return;
    paint.setPointerCapture(e.pointerId);
    snapshot();
    drawing = true;
    last = at(e);
    stroke(last, last);
  });
  paint.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    const p = at(e);
    stroke(last, p);
    last = p;
  });
  const endStroke = () => { if (drawing) { drawing = false; maskChanged(); } };
  paint.addEventListener("pointerup", endStroke);
  paint.addEventListener("pointercancel", endStroke);
  $("brush").addEventListener("input", () => { $("brush-out").textContent = $("brush").value; });
  $("eraser").addEventListener("click", () => {
    const on = $("eraser").getAttribute("aria-pressed") !== "true";
    $("eraser").setAttribute("aria-pressed", String(on));
  });
  $("undo").addEventListener("click", () => { const s = undo.pop(); if (s) { pctx.putImageData(s, 0, 0); maskChanged(); } });
  $("clear").addEventListener("click", () => { snapshot(); pctx.clearRect(0, 0, paint.width, paint.height); maskChanged(); });
  $("invert").addEventListener("click", () => {
    snapshot();
    const copy = document.createElement("canvas");
    copy.width = paint.width; copy.height = paint.height;
    copy.getContext("2d").drawImage(paint, 0, 0);
    pctx.globalCompositeOperation = "source-over";
    pctx.fillStyle = "#ff2d55";
    pctx.fillRect(0, 0, paint.width, paint.height);
    pctx.globalCompositeOperation = "destination-out";
    pctx.drawImage(copy, 0, 0);
    pctx.globalCompositeOperation = "source-over";
    maskChanged();
  });
  $("mask-editor").addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); $("undo").click(); }
    else if (e.key === "[" || e.key === "]") {
      $("brush").value = Number($("brush").value) + (e.key === "]" ? 8 : -8);
      $("brush-out").textContent = $("brush").value;
    }
  });
  function painted() {
    if (!paint.width) return false;
    const d = pctx.getImageData(0, 0, paint.width, paint.height).data;
    for (let i = 3; i < d.length; i += 4) if (d[i] >= 128) return true;
    return false;
  }
  function maskChanged() {
    $("mask-state").textContent = painted()
      ? "Mask painted: only the painted area changes; the rest is kept exactly."
      : "No mask painted: the whole image may change.";
  }
  /** OpenAI's mask: the first image's size, transparent (alpha 0) where to edit, opaque elsewhere. */
  async function buildMask() {
    if (!state.inputs.length || !painted()) return null;
    const src = pctx.getImageData(0, 0, paint.width, paint.height).data;
    const c = document.createElement("canvas");
    c.width = paint.width; c.height = paint.height;
    const cx = c.getContext("2d");
    const out = cx.createImageData(c.width, c.height);
    for (let i = 3; i < src.length; i += 4) out.data[i] = src[i] >= 128 ? 0 : 255;
    cx.putImageData(out, 0, 0);
    return new Promise((resolve) => c.toBlob(resolve, "image/png"));
  }

  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addInputs(e.dataTransfer.files); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("files").click(); } });
  $("files").addEventListener("change", () => { addInputs($("files").files); $("files").value = ""; });
  document.addEventListener("paste", (e) => {
    if (state.mode !== "edit") return;
    const files = [...(e.clipboardData?.files || [])];
    if (files.length) addInputs(files);
  });

  // -- copy as code ------------------------------------------------------------------------
  let codeRun = null, codeLang = "python";
  function py(v) {
    if (v === true) return "True";
    if (v === false) return "False";
    if (v === null || v === undefined) return "None";
    return typeof v === "string" ? JSON.stringify(v) : String(v);
  }
  function files(run) {
    // A history entry keeps no uploads: its code names them input-1.png (and mask.png) for you to supply.
    if (!run.inputs.length) return run.task === "edit" ? ["input-1.png", ...(run.masked ? ["mask.png"] : [])] : [];
    return [...run.inputs.map((im, i) => `input-${i + 1}.${(im.blob.type.split("/")[1] || "png").replace("jpeg", "jpg")}`),
      ...(run.mask ? ["mask.png"] : [])];
  }
  function snippet(run, lang) {
    const p = run.params, base = `${location.origin}/v1`, ext = p.output_format || "png";
    const std = Object.entries(p).filter(([k]) => !EXT_PARAMS.includes(k));
    const extra = Object.entries(p).filter(([k]) => EXT_PARAMS.includes(k));
    const names = files(run);
    const inputNames = names.filter((n) => n !== "mask.png");
    const masked = names.includes("mask.png");
    const edit = run.task === "edit";
    if (lang === "python") {
      const lines = ["import base64", "import os", "", "from openai import OpenAI", "",
        `client = OpenAI(base_url=${py(base)}, api_key=os.environ.get("IMAGEGATE_API_KEY", "none"))`];
      const args = std.map(([k, v]) => `    ${k}=${py(v)},`);
      if (edit) {
        args.unshift(inputNames.length > 1 ? `    image=[${inputNames.map((f) => `open(${py(f)}, "rb")`).join(", ")}],`
          : `    image=open(${py(inputNames[0])}, "rb"),`);
        if (masked) args.push('    mask=open("mask.png", "rb"),');
      }
      if (extra.length) args.push(`    extra_body={${extra.map(([k, v]) => `${py(k)}: ${py(v)}`).join(", ")}},  # imagegate's extensions`);
      lines.push(`result = client.images.${edit ? "edit" : "generate"}(`, ...args, ")");
      if (p.stream) {
        lines.push("i = 0", "for event in result:", '    if event.type.endswith(".completed"):',
          `        with open(f"image-{i}.${ext}", "wb") as f:`, "            f.write(base64.b64decode(event.b64_json))",
          "        i += 1");
      } else {
        lines.push("for i, image in enumerate(result.data):", `    with open(f"image-{i}.${ext}", "wb") as f:`,
          "        f.write(base64.b64decode(image.b64_json))");
      }
      return lines.join("\n") + "\n";
    }
    if (lang === "js") {
      const body = std.map(([k, v]) => `  ${k}: ${JSON.stringify(v)},`);
      if (edit) {
        body.unshift(`  image: [${inputNames.map((f) => `await toFile(fs.createReadStream(${JSON.stringify(f)}), ${JSON.stringify(f)}, { type: ${JSON.stringify(mime(f))} })`).join(", ")}],`);
        if (masked) body.push('  mask: await toFile(fs.createReadStream("mask.png"), "mask.png", { type: "image/png" }),');
      }
      if (extra.length) body.push("  // imagegate's extensions, sent as they are:", ...extra.map(([k, v]) => `  ${k}: ${JSON.stringify(v)},`));
      const lines = ['import fs from "node:fs";', `import OpenAI${edit ? ", { toFile }" : ""} from "openai";`, "",
        `const client = new OpenAI({ baseURL: ${JSON.stringify(base)}, apiKey: process.env.IMAGEGATE_API_KEY ?? "none" });`,
        `const result = await client.images.${edit ? "edit" : "generate"}({`, ...body, "});"];
      if (p.stream) {
        lines.push("let i = 0;", "for await (const event of result) {",
          `  if (event.type.endsWith(".completed")) fs.writeFileSync(\`image-\${i++}.${ext}\`, Buffer.from(event.b64_json, "base64"));`, "}");
      } else {
        lines.push(`result.data.forEach((image, i) => fs.writeFileSync(\`image-\${i}.${ext}\`, Buffer.from(image.b64_json, "base64")));`);
      }
      return lines.join("\n") + "\n";
    }
    const sh = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;
    const auth = '  -H "Authorization: Bearer $IMAGEGATE_API_KEY" \\';
    const decode = p.stream
      ? `  | sed -n 's/^data: //p' | jq -r 'select(.type | endswith(".completed")) | .b64_json' \\\n  | head -n 1 | base64 -d > image.${ext}`
      : `  | jq -r '.data[0].b64_json' | base64 -d > image.${ext}`;
    if (edit) {
      const parts = [...inputNames.map((f) => `  -F ${sh(`${inputNames.length > 1 ? "image[]" : "image"}=@${f}`)} \\`),
        ...(masked ? ["  -F 'mask=@mask.png' \\"] : []), ...Object.entries(p).map(([k, v]) => `  -F ${sh(`${k}=${v}`)} \\`)];
      return [`curl -s${p.stream ? "N" : ""} ${base}/images/edits \\`, auth, ...parts, decode].join("\n") + "\n";
    }
    return [`curl -s${p.stream ? "N" : ""} ${base}/images/generations \\`, auth, '  -H "Content-Type: application/json" \\',
      `  -d ${sh(JSON.stringify(p))} \\`, decode].join("\n") + "\n";
  }
  function mime(name) { return name.endsWith(".jpg") ? "image/jpeg" : `image/${name.split(".").pop()}`; }
  function showCode(run) {
    codeRun = run;
    renderCode();
    $("code-dialog").showModal();
  }
  function renderCode() {
    for (const t of document.querySelectorAll("#code-dialog [role=tab]")) t.setAttribute("aria-selected", String(t.dataset.lang === codeLang));
    $("code").textContent = snippet(codeRun, codeLang);
    $("code-copied").textContent = "";
    const holder = $("code-files");
    holder.textContent = "";
    if (codeRun.task === "edit" && !codeRun.inputs.length) {
      holder.append("The history keeps no uploads: supply the input image (and mask) under these names.");
    } else if (codeRun.task === "edit") {
      holder.append("Files the code reads: ");
      const names = files(codeRun);
      const blobs = [...codeRun.inputs.map((im) => im.blob), ...(codeRun.mask ? [codeRun.mask] : [])];
      names.forEach((n, i) => {
        const a = document.createElement("a");
        a.href = URL.createObjectURL(blobs[i]);
        a.download = n;
        a.textContent = n;
        holder.append(a, i < names.length - 1 ? ", " : ".");
      });
    }
  }
  document.querySelectorAll("#code-dialog [role=tab]").forEach((t) => t.addEventListener("click", () => { codeLang = t.dataset.lang; renderCode(); }));
  $("code-copy").addEventListener("click", async () => {
    const text = $("code").textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) { // no clipboard permission (plain http on another host): select it for Ctrl+C
      const r = document.createRange();
      r.selectNodeContents($("code"));
      getSelection().removeAllRanges();
      getSelection().addRange(r);
      document.execCommand && document.execCommand("copy");
    }
    $("code-copied").textContent = "Copied.";
  });

  // -- history (kept in the server's store; this tab remembers the links) ------------------
  function loadHistory() {
    try {
      const now = Date.now() / 1000;
      return (JSON.parse(sessionStorage.getItem(HISTORY) || "[]")).filter((h) => !h.expires_at || h.expires_at > now);
    } catch (_) { return []; }
  }
  function saveHistory() {
    try { sessionStorage.setItem(HISTORY, JSON.stringify(state.history)); } catch (_) { /* full: keep in memory */ }
    $("history-count").textContent = String(state.history.length);
  }
  async function keep(item) {
    try {
      const resp = await api("/playground/api/history", { method: "POST", body: item.blob,
        headers: { "content-type": item.blob.type || "application/octet-stream" } });
      const { url, expires_at } = await resp.json();
      const { inputs, mask, ...run } = item.run; // uploads stay in this page, not in the history
      state.history.unshift({ url, expires_at, prompt: item.prompt, model: item.model, served: item.served, seed: item.seed,
        seconds: item.seconds, cost: item.cost, run: { ...run, inputs: [], mask: null, masked: !!mask }, created: Date.now() });
      saveHistory();
    } catch (err) {
      console.warn("history: not kept", err);
    }
  }
  function renderHistory() {
    state.history = loadHistory();
    saveHistory();
    const grid = $("history");
    grid.textContent = "";
    if (!state.history.length) {
      const p = document.createElement("p");
      p.className = "empty muted";
      p.textContent = "Nothing yet: the images you make in this tab appear here.";
      grid.append(p);
    }
    for (const h of state.history) {
      const el = card("history");
      grid.append(el);
      present(el, { ...h, blob: null, url: h.url });
      el.querySelector(".tag").textContent = new Date(h.created).toLocaleTimeString();
    }
  }
  $("history-clear").addEventListener("click", () => { state.history = []; saveHistory(); renderHistory(); });

  // -- usage (only where the server has the usage API) -------------------------------------
  async function probeUsage() {
    const start = Math.floor(Date.now() / 1000) - 30 * 86400;
    try {
      const r = await fetch(`/v1/organization/usage/images?start_time=${start}&bucket_width=1d&limit=1`,
        { headers: state.key ? { Authorization: `Bearer ${state.key}` } : {} });
      state.usage = r.ok;
    } catch (_) { state.usage = false; }
    $("tab-usage").hidden = !state.usage;
  }
  async function loadUsage() {
    const start = Math.floor(Date.now() / 1000 / 86400) * 86400 - 29 * 86400;
    try {
      // end_time: the end of today's bucket (the default, "now" in whole seconds, can leave out
      // a request made within the current second)
      const q = `start_time=${start}&end_time=${start + 30 * 86400}&bucket_width=1d&group_by=model&limit=31`;
      const [u, c] = await Promise.all([api(`/v1/organization/usage/images?${q}`).then((r) => r.json()),
        api(`/v1/organization/costs?${q}`).then((r) => r.json()).catch(() => ({ data: [] }))]);
      const days = [], models = new Set(), images = {}, costs = {};
      for (const b of u.data) {
        const d = new Date(b.start_time * 1000).toISOString().slice(5, 10);
        days.push(d);
        for (const r of b.results) { const m = r.model || "all"; models.add(m); (images[d] ||= {})[m] = (images[d][m] || 0) + (r.images || 0); }
      }
      for (const b of c.data || []) {
        const d = new Date(b.start_time * 1000).toISOString().slice(5, 10);
        for (const r of b.results) {
          const m = r.model || r.line_item || "all"; models.add(m);
          (costs[d] ||= {})[m] = (costs[d][m] || 0) + Number((r.amount && r.amount.value) || 0);
        }
      }
      const ms = [...models];
      bars($("usage-images"), days, ms, images, (v) => String(Math.round(v)));
      bars($("usage-cost"), days, ms, costs, (v) => `$${v.toFixed(2)}`);
      const t = $("usage-table");
      t.querySelectorAll("tr").forEach((r) => r.remove());
      const head = t.insertRow();
      ["day", ...ms.flatMap((m) => [`${m} images`, `${m} cost`])].forEach((h) => { const th = document.createElement("th"); th.textContent = h; head.append(th); });
      for (const d of days) {
        const r = t.insertRow();
        r.insertCell().textContent = d;
        for (const m of ms) {
          r.insertCell().textContent = String((images[d] || {})[m] || 0);
          r.insertCell().textContent = `$${((costs[d] || {})[m] || 0).toFixed(4)}`;
        }
      }
    } catch (err) {
      $("usage-who").textContent = err instanceof ApiError ? err.message : String(err);
    }
  }
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  function bars(canvas, days, models, values, label) {
    const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 34;
    ctx.clearRect(0, 0, W, H);
    const totals = days.map((d) => models.reduce((s, m) => s + ((values[d] || {})[m] || 0), 0));
    const max = Math.max(1e-9, ...totals);
    const bw = (W - pad * 2) / Math.max(1, days.length);
    const fg = getComputedStyle(document.body).color;
    ctx.fillStyle = fg; ctx.font = "12px system-ui";
    ctx.fillText(label(max), 2, 14);
    days.forEach((d, i) => {
      let y = H - pad;
      models.forEach((m, k) => {
        const h = (((values[d] || {})[m] || 0) / max) * (H - pad * 2);
        ctx.fillStyle = PALETTE[k % PALETTE.length];
        ctx.fillRect(pad + i * bw + 1, y - h, Math.max(1, bw - 2), h);
        y -= h;
      });
      if (i % Math.ceil(days.length / 10) === 0) { ctx.fillStyle = fg; ctx.fillText(d, pad + i * bw, H - pad + 14); }
    });
    models.forEach((m, k) => { ctx.fillStyle = PALETTE[k % PALETTE.length]; ctx.fillRect(W - 160, 6 + k * 16, 10, 10); ctx.fillStyle = fg; ctx.fillText(m, W - 145, 15 + k * 16); });
  }

  // -- start -------------------------------------------------------------------------------
  async function boot() {
    setKey(state.key);
    showError("");
    try {
      await loadModels();
      await probeUsage();
    } catch (err) {
      showError(err instanceof ApiError ? err.message : `Could not reach the server: ${err}`);
    }
  }
  $("history-count").textContent = String(state.history.length);
  if (!$("seed").value) $("seed").value = randomSeed();
  setMode("generate");
  boot();
})();
