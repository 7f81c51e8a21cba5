// Playground: one prompt through several pipelines at once; each lane shows the text as it streams and
// draws every event as a bar (height: its size in bytes; position: its arrival time).
"use strict";
(() => {
  const { call, el } = Console;
  const svgNS = "http://www.w3.org/2000/svg";

  function lane(route) {
    const box = el("section", { class: "lane", "data-route": route });
    const stats = el("p", { class: "hint" }, "waiting…");
    const text = el("div", { class: "text" });
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `event sizes and timing for ${route}`);
    svg.setAttribute("viewBox", "0 0 300 80");
    svg.setAttribute("preserveAspectRatio", "none");
    box.append(el("h2", {}, route), stats, svg, text);
    return { box, stats, text, svg, events: [] };
  }

  function draw(view, elapsed) {
    const span = Math.max(elapsed, 1);
    const biggest = Math.max(...view.events.map((e) => e.size), 1);
    view.svg.replaceChildren(...view.events.map((e) => {
      const bar = document.createElementNS(svgNS, "rect");
      bar.setAttribute("x", String((e.at / span) * 297));
      bar.setAttribute("width", "3");
      const h = Math.max(2, (e.size / biggest) * 78);
      bar.setAttribute("y", String(80 - h));
      bar.setAttribute("height", String(h));
      return bar;
    }));
  }

  async function run(route, model, prompt, view) {
    const started = performance.now();
    const chat = route.endsWith("/chat/completions");
    const body = chat
      ? { model, stream: true, messages: [{ role: "user", content: prompt }] }
      : { model, stream: true, prompt };
    const response = await call("POST", `/console/api/playground${route}`, body);
    if (!response.ok) {
      const failed = await response.json().catch(() => ({}));
      view.stats.textContent = `HTTP ${response.status}: ${(failed.error && failed.error.message) || ""}`;
      view.box.dataset.done = "error";
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    let first = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const at = performance.now() - started;
      buffered += decoder.decode(value, { stream: true });
      const events = buffered.split("\n\n");
      buffered = events.pop();
      for (const event of events) {
        const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
        if (!data || data === "[DONE]") continue;
        if (first === null) first = at;
        view.events.push({ at, size: new TextEncoder().encode(data).length });
        const parsed = JSON.parse(data);
        const choice = (parsed.choices || [])[0] || {};
        view.text.append((choice.delta && choice.delta.content) || choice.text || "");
      }
      view.stats.textContent = `${view.events.length} events, first after ${Math.round(first ?? at)} ms, ${Math.round(at)} ms so far`;
      draw(view, at);
    }
    view.box.dataset.done = "ok";
  }

  document.getElementById("play-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target;
    const routes = [...form.querySelectorAll('input[name="route"]:checked')].map((c) => c.value);
    const lanes = document.getElementById("lanes");
    const views = routes.map(lane);
    lanes.replaceChildren(...views.map((v) => v.box));
    for (const [i, route] of routes.entries()) {
      run(route, form.model.value, form.prompt.value, views[i]).catch((error) => {
        views[i].stats.textContent = String(error);
        views[i].box.dataset.done = "error";
      });
    }
  });
})();
