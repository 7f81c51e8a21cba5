// Audit: search conversations by text, key, model and time; open one; export it as JSON.
"use strict";
(() => {
  const { json, el, row, showError } = Console;
  let opened = null;

  function iso(value) { return value ? new Date(value).toISOString() : ""; }

  async function search() {
    const form = document.getElementById("audit-form");
    const params = new URLSearchParams();
    for (const name of ["text", "key", "model"]) if (form[name].value.trim()) params.set(name, form[name].value.trim());
    for (const name of ["since", "until"]) if (form[name].value) params.set(name, iso(form[name].value));
    try {
      const page = await json("GET", `/console/api/audit/conversations?${params}`);
      document.querySelector("#conversations tbody").replaceChildren(...page.data.map((c) => {
        const link = el("a", { href: `#${c.id}`, "data-conversation": c.id }, new Date(c.started_at).toLocaleString());
        link.addEventListener("click", (event) => { event.preventDefault(); open(c.id); });
        return row(el("td", {}, link), c.key_name || "–", c.model, c.requests, el("td", { class: "wrap" }, c.id));
      }));
      showError("audit-error", null);
    } catch (error) { showError("audit-error", error); }
  }

  async function open(id) {
    try {
      opened = await json("GET", `/console/api/audit/conversations/${encodeURIComponent(id)}`);
      document.getElementById("conversation-id").textContent = id;
      document.getElementById("messages").replaceChildren(...opened.messages.map((m) =>
        el("li", {}, el("strong", {}, `${m.role}: `), m.content == null ? `(${m.content_bytes} bytes, not kept)` : m.content)));
      document.getElementById("conversation").hidden = false;
    } catch (error) { showError("audit-error", error); }
  }

  document.getElementById("export").addEventListener("click", () => {
    if (!opened) return;
    const blob = new Blob([JSON.stringify(opened, null, 2)], { type: "application/json" });
    const link = el("a", { href: URL.createObjectURL(blob), download: `conversation-${opened.id}.json` });
    document.body.append(link);
    link.click();
    link.remove();
  });
  document.getElementById("audit-form").addEventListener("submit", (event) => { event.preventDefault(); search(); });
  search();
})();
