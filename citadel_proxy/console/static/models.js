// Models: list (with what is loaded), pull with a live bar from the NDJSON progress, delete after a
// confirmation, keep warm (30 min) or unload now.
"use strict";
(() => {
  const { json, call, el, row, bytes, showError } = Console;
  const dialog = document.getElementById("confirm-delete");

  async function load() {
    try {
      const [installed, running] = await Promise.all([
        json("GET", "/console/api/models"), json("GET", "/console/api/models/running"),
      ]);
      const loaded = new Map(running.models.map((m) => [m.name, m]));
      document.querySelector("#models tbody").replaceChildren(...installed.models.map((m) => {
        const actions = el("td", {},
          button("Keep warm", () => keep(m.name, "30m")), " ",
          button("Unload", () => keep(m.name, 0)), " ",
          button("Delete", () => confirmDelete(m.name), "danger"));
        const on = loaded.get(m.name);
        return row(m.name, "ollama", bytes(m.size), on ? `${on.processor}, ${bytes(on.size_vram)} VRAM` : "no", actions);
      }));
      showError("models-error", null);
    } catch (error) { showError("models-error", error); }
  }

  function button(label, action, kind) {
    const b = el("button", { type: "button", class: kind || "secondary" }, label);
    b.addEventListener("click", action);
    return b;
  }

  async function keep(model, keepAlive) {
    try { await json("POST", "/console/api/models/keep", { model, keep_alive: keepAlive }); await load(); }
    catch (error) { showError("models-error", error); }
  }

  function confirmDelete(model) {
    document.getElementById("confirm-name").textContent = model;
    dialog.returnValue = "";
    dialog.onclose = async () => {
      if (dialog.returnValue !== "delete") return;
      try { await json("POST", "/console/api/models/delete", { model }); await load(); }
      catch (error) { showError("models-error", error); }
    };
    dialog.showModal();
  }

  function progress(event) {
    const bar = document.getElementById("pull-bar");
    let percent = event.percent != null ? event.percent : (event.total ? (100 * (event.completed || 0)) / event.total : null);
    if (event.status === "success") percent = 100;
    if (percent != null) {
      bar.value = percent;
      document.getElementById("pull-percent").textContent = `${Math.floor(percent)}%`;
    }
    document.getElementById("pull-text").textContent = event.status === "error"
      ? `error: ${(event.error && event.error.message) || ""}` : event.status;
  }

  async function pull(model) {
    document.getElementById("pull-status").hidden = false;
    progress({ status: "starting", percent: 0 });
    const response = await call("POST", "/console/api/models/pull", { model });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || `HTTP ${response.status}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      const lines = buffered.split("\n");
      buffered = lines.pop();
      for (const line of lines) if (line.trim()) progress(JSON.parse(line));
    }
    await load();
  }

  document.getElementById("pull-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const model = document.getElementById("pull-name").value.trim();
    pull(model).catch((error) => showError("models-error", error));
  });
  load();
})();
