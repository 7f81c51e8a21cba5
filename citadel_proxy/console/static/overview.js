// Overview: one EventSource on /console/api/overview; each "snapshot" event redraws the page.
"use strict";
(() => {
  const { el, row, bytes } = Console;
  const history = {}; // route -> recent p95 values, for the sparkline
  const ms = (s) => (s == null ? "–" : `${Math.round(s * 1000)} ms`);

  function spark(values) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 120 24");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "p95 over the last minutes");
    if (values.length === 1) values = [values[0], values[0]]; // a flat line, not nothing
    const top = Math.max(...values, 1e-9);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    const step = values.length > 1 ? 120 / (values.length - 1) : 0;
    line.setAttribute("points", values.map((v, i) => `${i * step},${23 - (v / top) * 22}`).join(" "));
    svg.append(line);
    return svg;
  }

  function draw(s) {
    document.getElementById("in-flight").textContent = s.in_flight;
    document.getElementById("rps").textContent = s.requests_per_s.toFixed(2);
    document.getElementById("window").textContent = s.window_s ? `over the last ${s.window_s} s` : "measuring…";
    document.querySelector("#backends tbody").replaceChildren(...s.backends.map((b) => row(
      `${b.name} (${b.base_url})`,
      el("span", { class: b.healthy ? "ok" : "down" }, b.healthy ? "healthy" : `down: ${b.error || ""}`),
      b.version || "–",
      b.latency_ms == null ? "–" : `${b.latency_ms.toFixed(1)} ms`,
      b.loaded_models.map((m) => `${m.name} (${m.processor})`).join(", ") || "none",
      bytes(b.vram_bytes),
    )));
    document.querySelector("#queues tbody").replaceChildren(...(s.queues.length
      ? s.queues.map((q) => row(q.pipeline, q.waiting, q.wait_ms == null ? "–" : `${q.wait_ms} ms`))
      : [row("none", 0, "–")]));
    const gpus = s.gpus.gpus || [];
    document.querySelector("#gpus tbody").replaceChildren(...gpus.map((g) => row(
      g.index, g.name || "–",
      g.utilization_gpu_percent == null ? "–" : `${g.utilization_gpu_percent}%`,
      `${g.memory_used_mib ?? "–"} / ${g.memory_total_mib ?? "–"} MiB`,
      g.temperature_c == null ? "–" : `${g.temperature_c} °C`,
      g.power_draw_w == null ? "–" : `${g.power_draw_w} W`,
    )));
    document.getElementById("gpu-note").textContent = gpus.length ? "" : s.gpus.status;
    document.querySelector("#ttft tbody").replaceChildren(...s.ttft.map((t) => {
      const past = (history[t.route] = (history[t.route] || []).concat([t.p95_s || 0]).slice(-60));
      return row(t.route, ms(t.p50_s), ms(t.p95_s), t.count, el("td", {}, spark(past)));
    }));
    const errors = document.getElementById("errors");
    errors.replaceChildren(...(s.errors.length
      ? s.errors.map((e) => el("li", {}, `${e.kind}: ${e.count}`))
      : [el("li", {}, "None in the window.")]));
  }

  const live = document.getElementById("live");
  const source = new EventSource("/console/api/overview");
  source.addEventListener("snapshot", (event) => {
    live.textContent = "live";
    draw(JSON.parse(event.data));
  });
  source.addEventListener("error", () => { live.textContent = "reconnecting…"; });
})();
