// Shared helpers of the console's pages: fetch with the session's CSRF token, small DOM builders.
"use strict";
const Console = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  async function call(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) { window.location.assign("/console/login"); }
    return response;
  }

  async function json(method, path, body) {
    const response = await call(method, path, body);
    const parsed = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = (parsed.error && parsed.error.message) || `HTTP ${response.status}`;
      throw new Error(message);
    }
    return parsed;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value; else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
    return node;
  }

  function row(...cells) {
    return el("tr", {}, ...cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
  }

  function bytes(n) {
    if (n == null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function showError(id, error) {
    const node = document.getElementById(id);
    node.textContent = error ? String(error.message || error) : "";
    node.hidden = !error;
  }

  return { call, json, el, row, bytes, showError };
})();
