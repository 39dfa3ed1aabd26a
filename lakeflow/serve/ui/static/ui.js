// lakeflow's web UI: the token for writes (kept for this tab), POST buttons, the materialize
// form and live run progress over server-sent events. No framework, no build step.
(function () {
  "use strict";
  const tokenBox = document.getElementById("token");
  if (tokenBox) {
    tokenBox.value = sessionStorage.getItem("lakeflow-token") || "";
    tokenBox.addEventListener("change", () => sessionStorage.setItem("lakeflow-token", tokenBox.value));
  }
  const say = (text, bad) => {
    const out = document.getElementById("result");
    if (out) { out.textContent = text; out.className = bad ? "error" : "ok"; }
  };
  async function post(url, body) {
    const token = tokenBox ? tokenBox.value.trim() : "";
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body || {}) });
    let data = {};
    try { data = await response.json(); } catch (e) { /* not JSON */ }
    return { ok: response.ok, status: response.status, data };
  }
  const report = (r) => {
    if (!r.ok) { say("refused (" + r.status + "): " + (r.data.error || ""), true); return; }
    if (r.data.message) { say(r.data.message, false); return; }
    if (r.data.run_id) {
      const out = document.getElementById("result");
      out.className = "ok";
      out.textContent = "started run ";
      const link = document.createElement("a");
      link.href = "/ui/runs/" + r.data.run_id; link.textContent = r.data.run_id; link.className = "run";
      out.appendChild(link);
      if (r.data.units !== undefined && r.data.units !== null) out.append(" (" + r.data.units + " units)");
    }
  };
  document.querySelectorAll("button[data-post]").forEach((button) =>
    button.addEventListener("click", async () => report(await post(button.dataset.post))));
  const form = document.getElementById("materialize");
  if (form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const select = Array.from(form.elements.select.selectedOptions).map((o) => o.value);
      const partitions = form.elements.partitions.value.trim();
      const body = { select: select.length ? select : "*", force: form.elements.force.checked };
      if (partitions) body.partitions = partitions;
      report(await post(form.dataset.action, body));
    });
  }
  const progress = document.getElementById("progress");
  if (progress && progress.dataset.stream && window.EventSource) {
    const source = new EventSource(progress.dataset.stream);
    source.onmessage = (message) => {
      const info = JSON.parse(message.data);
      for (const key of ["status", "published", "total", "failed"]) {
        const el = document.getElementById(key);
        if (el && info[key] !== undefined) el.textContent = info[key];
      }
      if (info.status !== "running") { source.close(); setTimeout(() => location.reload(), 300); }
    };
  }
})();
