// The team page follows its instance and queued actions without a reload: it polls the page's small JSON
// status endpoint (faster while something is in progress) and rewrites the parts that change.
(function () {
  "use strict";
  const root = document.querySelector("[data-status-url]");
  if (!root) return;
  const url = root.dataset.statusUrl;
  const BUSY_MS = 1000, IDLE_MS = 5000;
  const TRANSITIONAL = new Set(["pending", "provisioning", "destroying"]);

  function text(id, value) {
    const node = document.getElementById(id);
    if (node) node.textContent = value;
  }

  function when(iso) {
    return iso.replace("T", " ").slice(0, 19);
  }

  function list(id, items, render, empty) {
    const node = document.getElementById(id);
    if (!node) return;
    const rows = items.map((item) => {
      const li = document.createElement("li");
      render(li, item);
      return li;
    });
    if (!rows.length) {
      const li = document.createElement("li");
      li.textContent = empty;
      rows.push(li);
    }
    node.replaceChildren(...rows);
  }

  function update(status) {
    const state = document.getElementById("instance-state");
    state.textContent = status.state_display;
    state.dataset.state = status.state;
    state.className = "state state-" + status.state;
    text("desired-state", status.desired_state ? "(wants " + status.desired_state + ")" : "");
    text("completed-steps", status.completed_steps.join(", ") || "-");
    text("last-error", status.last_error);
    text("last-backup", status.last_backup_at ? when(status.last_backup_at) + " UTC" : "never");
    text("token-generation", status.token_generation);
    // The instance's own address: it serves only its router's requests (the Datasette link is the router's).
    text("instance-url", status.url || "-");
    list("action-list", status.actions, (li, action) => {
      li.className = "action-" + action.status;
      li.textContent = action.kind + ": " + action.status + (action.error ? " — " + action.error : "");
    }, "No action yet.");
    list("timeline", status.timeline, (li, entry) => {
      if (entry.is_error) li.className = "error";
      const time = document.createElement("time");
      time.textContent = when(entry.time);
      const kind = document.createElement("code");
      kind.textContent = entry.kind;
      const actor = document.createElement("span");
      actor.className = "actor";
      actor.textContent = "by " + entry.actor;
      li.append(time, " ", kind, " " + entry.message + " ", actor);
    }, "Nothing yet.");
    return TRANSITIONAL.has(status.state) || status.actions.some((action) => !action.done);
  }

  async function poll() {
    let busy = false;
    try {
      const response = await fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
      if (response.ok) busy = update(await response.json());
    } catch (error) {
      // The control plane restarting or the network blinking: try again at the idle pace.
    }
    setTimeout(poll, busy ? BUSY_MS : IDLE_MS);
  }
  poll();
})();
