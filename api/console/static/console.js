// specmill console: the little the server cannot do. Times in the browser's zone, and a run's live view
// on the event stream (no polling): each event re-renders the run's rows on the server.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) {
      el.textContent = when.toLocaleString();
      el.title = el.getAttribute("datetime");
    }
  }
}

function follow(section) {
  const liveUrl = section.dataset.rows;
  const status = document.getElementById("live-status");
  let source = null;
  let busy = false;
  let again = false;

  function finished() { return section.querySelector("[data-terminal]") !== null; }

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const resp = await fetch(liveUrl, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (resp.redirected) { window.location.assign(resp.url); return; }  // the session ended: sign in
      if (resp.ok) {
        section.innerHTML = await resp.text();
        localTimes(section);
        if (finished() && source) {
          source.close();
          source = null;
          if (status) status.textContent = "The run has ended.";
        }
      }
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  if (finished()) return;
  // subscribe first, then render once: nothing that happens in between is missed
  source = new EventSource(section.dataset.stream, { withCredentials: true });
  source.onopen = () => { if (status) status.textContent = "Live: this page follows the run as it moves."; refresh(); };
  source.onmessage = refresh;
  for (const kind of ["project.state_changed", "run.progress", "spec.complete", "code.generated", "task.created", "task.completed"]) {
    source.addEventListener(kind, refresh);
  }
  source.onerror = () => { if (status && source) status.textContent = "Reconnecting to the event stream…"; };
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const live = document.getElementById("live-run");
  if (live) follow(live);
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => { if (!window.confirm(form.dataset.confirm)) e.preventDefault(); });
  }
});
