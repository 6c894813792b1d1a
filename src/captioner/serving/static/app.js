// The captioner page: upload a photo, show its caption, and shade the photo by each word's
// attention map. Plain JS with no dependencies, so the page works offline.
"use strict";

(function () {
  const form = document.getElementById("upload-form");
  const input = document.getElementById("photo-input");
  const zone = document.getElementById("drop-zone");
  const beam = document.getElementById("beam-size");
  const guidance = document.getElementById("guidance");
  const status = document.getElementById("status");
  const errorBox = document.getElementById("error");
  const result = document.getElementById("result");
  const photo = document.getElementById("photo");
  const canvas = document.getElementById("heatmap");
  const captionText = document.getElementById("caption");
  const scoreText = document.getElementById("score");
  const labelsText = document.getElementById("labels");
  const wordList = document.getElementById("words");
  const wordStatus = document.getElementById("word-status");

  let limits = { max_upload_bytes: null, max_beam_size: null };
  let current = null; // the last successful response
  let shown = -1; // index of the word whose map is drawn
  let photoUrl = null;

  fetch("/health").then((r) => r.json()).then((health) => {
    limits = health.limits || limits;
    if (limits.max_beam_size) {
      for (const option of Array.from(beam.options)) {
        if (Number(option.value) > limits.max_beam_size) option.remove();
      }
    }
  }).catch(() => {});

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    status.textContent = "";
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  function formatBytes(bytes) {
    return bytes >= 1048576 ? (bytes / 1048576).toFixed(1) + " MB" : Math.ceil(bytes / 1024) + " kB";
  }

  async function captionFile(file) {
    clearError();
    if (!file) return;
    if (limits.max_upload_bytes && file.size > limits.max_upload_bytes) {
      showError(`${file.name} is ${formatBytes(file.size)}; this server takes photos up to ${formatBytes(limits.max_upload_bytes)}.`);
      return;
    }
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(file);
    current = null;
    shown = -1;
    wordList.replaceChildren();
    captionText.textContent = "";
    scoreText.textContent = "";
    labelsText.textContent = "";
    labelsText.hidden = true;
    clearHeatmap();
    photo.alt = "Your photo, not yet described";
    photo.src = photoUrl;
    result.hidden = false;
    result.setAttribute("aria-busy", "true");
    status.textContent = `Describing ${file.name}…`;

    const body = new FormData();
    body.append("image", file, file.name);
    let response;
    let values;
    try {
      const query = `beam_size=${encodeURIComponent(beam.value)}${guidance.checked ? "" : "&guidance=false"}`;
      response = await fetch(`/caption?${query}`, { method: "POST", body });
      values = await response.json();
    } catch (error) {
      result.removeAttribute("aria-busy");
      showError("The server could not be reached. Check that `captioner serve` is running, then try again.");
      return;
    }
    result.removeAttribute("aria-busy");
    if (!response.ok) {
      showError(values && values.error ? `Could not describe ${file.name}: ${values.error}` : `The server answered ${response.status}.`);
      photo.alt = "Your photo (no description available)";
      return;
    }
    current = values;
    captionText.textContent = values.caption;
    photo.alt = values.caption;
    scoreText.textContent = `Model log-probability ${values.score.toFixed(2)} (closer to 0 is more confident); model ${values.model}, beam size ${values.beam_size}.`;
    if (values.labels && values.labels.length) {
      // The classifier's own words are metadata worth showing: they say what guidance was based on.
      const seen = values.labels.slice(0, 3).map((l) => `${l.label} (${Math.round(100 * l.confidence)}%)`).join(", ");
      labelsText.textContent = `The image classifier sees: ${seen}.` +
        (values.guided_by ? ` The caption was made to name “${values.guided_by}”.` : "");
      labelsText.hidden = false;
    }
    values.words.forEach((entry, index) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = entry.word;
      button.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-label", `${entry.word}, word ${index + 1} of ${values.words.length}: show where the model looked`);
      button.addEventListener("mouseenter", () => showWord(index));
      button.addEventListener("focus", () => showWord(index));
      button.addEventListener("click", () => showWord(index));
      button.addEventListener("mouseleave", restoreFocusedWord);
      button.addEventListener("blur", restoreFocusedWord);
      item.appendChild(button);
      wordList.appendChild(item);
    });
    status.textContent = `Caption ready: ${values.caption}`;
  }

  function restoreFocusedWord() {
    const focused = wordList.querySelector("button:focus");
    if (focused) {
      showWord(Array.from(wordList.querySelectorAll("button")).indexOf(focused));
    } else {
      clearHeatmap();
    }
  }

  function sizeCanvas() {
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(photo.clientWidth * ratio));
    canvas.height = Math.max(1, Math.round(photo.clientHeight * ratio));
  }

  function clearHeatmap() {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    canvas.dataset.word = "";
    shown = -1;
    for (const button of wordList.querySelectorAll("button")) button.setAttribute("aria-pressed", "false");
  }

  // The map covers the whole photo: the model squeezes the picture to a square without cropping.
  // Low attention is shaded dark, so the parts the model looked at stay bright.
  function showWord(index) {
    if (!current || index < 0 || index >= current.words.length) return;
    const grid = current.words[index].attention;
    const rows = grid.length;
    const cols = rows ? grid[0].length : 0;
    if (!rows || !cols) return;
    // Stretched from the map's own minimum to its maximum: the model's maps are often flat
    // (every cell within a factor of 2), and shading by value/peak would then show nothing.
    let low = Infinity;
    let high = -Infinity;
    for (const row of grid) {
      for (const value of row) {
        low = Math.min(low, value);
        high = Math.max(high, value);
      }
    }
    const small = document.createElement("canvas");
    small.width = cols;
    small.height = rows;
    const smallContext = small.getContext("2d");
    const cells = smallContext.createImageData(cols, rows);
    for (let y = 0; y < rows; y++) {
      for (let x = 0; x < cols; x++) {
        const strength = high > low ? (grid[y][x] - low) / (high - low) : 1;
        const offset = (y * cols + x) * 4;
        cells.data[offset + 3] = Math.round(190 * (1 - strength));
      }
    }
    smallContext.putImageData(cells, 0, 0);
    sizeCanvas();
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    context.imageSmoothingEnabled = true; // the browser's bilinear upsampling of the grid
    context.imageSmoothingQuality = "high";
    context.drawImage(small, 0, 0, canvas.width, canvas.height);
    canvas.dataset.word = current.words[index].word;
    shown = index;
    wordList.querySelectorAll("button").forEach((button, i) => button.setAttribute("aria-pressed", String(i === index)));
    wordStatus.textContent = `Showing attention for "${current.words[index].word}".`;
  }

  input.addEventListener("change", () => captionFile(input.files[0]));
  form.addEventListener("submit", (event) => event.preventDefault());

  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) captionFile(file);
  });

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") clearHeatmap();
  });
  photo.addEventListener("load", () => {
    if (shown >= 0) showWord(shown);
  });
  window.addEventListener("resize", () => {
    if (shown >= 0) showWord(shown);
  });
})();
