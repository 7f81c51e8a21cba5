// Keys: create (the key is shown once, with a copy button), list, revoke.
"use strict";
(() => {
  const { json, el, row, showError } = Console;
  const when = (t) => (t ? new Date(t).toLocaleString() : "never");

  async function load() {
    try {
      const keys = await json("GET", "/console/api/keys");
      document.querySelector("#keys tbody").replaceChildren(...keys.map((k) => {
        const limits = [k.requests_per_minute && `${k.requests_per_minute} req/min`,
          k.tokens_per_minute && `${k.tokens_per_minute} tok/min`].filter(Boolean).join(", ") || "none";
        const cell = el("td", {});
        if (!k.revoked_at && k.source !== "config") {
          const b = el("button", { type: "button", class: "danger", "data-revoke": k.name }, "Revoke");
          b.addEventListener("click", () => revoke(k.name));
          cell.append(b);
        }
        return row(k.name, k.prefix || "–", k.scopes.join(", "), limits, when(k.last_used),
          k.revoked_at ? `revoked ${when(k.revoked_at)}` : `live (${k.source})`, cell);
      }));
      showError("keys-error", null);
    } catch (error) { showError("keys-error", error); }
  }

  async function revoke(name) {
    if (!window.confirm(`Revoke the key ${name}? Clients using it are refused at once.`)) return;
    try { await json("POST", "/console/api/keys/revoke", { name }); await load(); }
    catch (error) { showError("keys-error", error); }
  }

  document.getElementById("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const number = (v) => (v ? Number(v) : null);
    const body = {
      name: form.name.value.trim(),
      scopes: [...form.querySelectorAll('input[name="scope"]:checked')].map((c) => c.value),
      requests_per_minute: number(form.rpm.value),
      tokens_per_minute: number(form.tpm.value),
    };
    try {
      const made = await json("POST", "/console/api/keys/create", body);
      document.getElementById("new-key-value").textContent = made.key;
      document.getElementById("new-key").hidden = false;
      form.reset();
      await load();
    } catch (error) { showError("keys-error", error); }
  });

  document.getElementById("copy-key").addEventListener("click", async (event) => {
    const key = document.getElementById("new-key-value").textContent;
    try { await navigator.clipboard.writeText(key); event.target.textContent = "Copied"; }
    catch (_error) { event.target.textContent = "Select and copy by hand"; }
  });
  load();
})();
