// Pipelines: load each file's YAML, validate with file:line messages and a diff, apply (backup + reload).
"use strict";
(() => {
  const { json, el, showError } = Console;
  const select = document.getElementById("pipeline-file");
  const text = document.getElementById("pipeline-text");
  const result = document.getElementById("pipeline-result");
  let files = [];

  function show(checked, applied) {
    showError("pipeline-error", checked.ok ? null : new Error(checked.error));
    const diff = document.getElementById("pipeline-diff");
    diff.textContent = checked.diff || "(no change)";
    diff.hidden = false;
    result.textContent = !checked.ok ? "invalid" : applied ? (checked.reloaded ? "applied and reloaded" : "written; reload failed") : "valid";
  }

  async function load(keep) {
    files = await json("GET", "/console/api/pipelines");
    if (!keep) {
      select.replaceChildren(...files.map((f) => el("option", { value: f.file }, f.file)));
    }
    const chosen = files.find((f) => f.file === select.value) || files[0];
    text.value = chosen ? chosen.text : "";
  }

  async function send(path) {
    result.textContent = "…";
    const response = await Console.call("POST", path, { file: select.value, text: text.value });
    const body = await response.json();
    if (body.error && body.error.message) throw new Error(body.error.message);
    return body;
  }

  document.getElementById("pipeline-check").addEventListener("click", () =>
    send("/console/api/pipelines/check").then((c) => show(c, false)).catch((e) => showError("pipeline-error", e)));
  document.getElementById("pipeline-apply").addEventListener("click", () =>
    send("/console/api/pipelines/apply").then((c) => show(c, c.ok)).catch((e) => showError("pipeline-error", e)));
  select.addEventListener("change", () => load(true));
  load(false).catch((e) => showError("pipeline-error", e));
})();
