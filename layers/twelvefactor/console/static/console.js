// Live updates for a thread page: poll the console for events after the page's cursor (the API's
// events cursor), and insert the rows and the panel the server rendered (and escaped). No framework.
"use strict";

(function () {
  const thread = document.getElementById("thread");
  if (!thread || thread.dataset.final === "true") return;
  const timeline = document.getElementById("timeline");
  const pending = document.getElementById("pending");
  const statusLine = document.getElementById("status-line");
  const live = document.getElementById("live");
  let after = Number(thread.dataset.after);

  async function poll() {
    let delay = 1000;
    try {
      const response = await fetch(
        "/threads/" + encodeURIComponent(thread.dataset.thread) + "/updates?after=" + after,
        { headers: { Accept: "application/json" }, cache: "no-store" }
      );
      if (!response.ok) throw new Error("the console answered " + response.status);
      const update = await response.json();
      if (update.rows !== undefined) {
        timeline.insertAdjacentHTML("beforeend", update.rows);
        const typing = pending.contains(document.activeElement);
        if (!typing) pending.innerHTML = update.pending;
        statusLine.innerHTML = update.header;
        after = update.after;
        thread.dataset.after = String(after);
      }
      if (update.final) {
        live.textContent = "The thread has ended.";
        const cancel = document.getElementById("cancel");
        if (cancel) cancel.parentElement.remove();
        return;
      }
      // A thread waiting for a person changes rarely; one that runs, every second or so.
      delay = update.status.startsWith("awaiting") ? 3000 : 1000;
      live.textContent = "Watching for new events…";
    } catch (error) {
      live.textContent = "Live updates paused (" + error.message + "); retrying.";
      delay = 5000;
    }
    window.setTimeout(poll, delay);
  }

  window.setTimeout(poll, 500);
})();
