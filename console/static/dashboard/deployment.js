// A deployment's page follows it team by team without a reload: it polls the page's JSON status while the
// deployment is open and rewrites the counts, the state and the rows of the page being shown.
(function () {
  "use strict";
  const root = document.querySelector("[data-deployment-url]");
  if (!root) return;
  const url = root.dataset.deploymentUrl;
  const POLL_MS = 1000;

  function update(status) {
    const state = document.getElementById("deployment-state");
    state.textContent = status.state_display;
    state.className = "deploy-" + status.state;
    state.dataset.open = String(status.is_open);
    document.getElementById("deployment-message").textContent = status.message || "-";
    const resume = document.getElementById("resume-form");
    if (resume) resume.hidden = !status.is_open;
    for (const card of document.querySelectorAll("#deployment-progress [data-step]")) {
      card.querySelector("strong").textContent = status.progress[card.dataset.step];
    }
    const rows = document.querySelectorAll("#deployment-targets tbody tr");
    status.targets.forEach((target, index) => {
      const cells = rows[index] && rows[index].children;
      if (!cells || cells.length < 5) return;
      cells[2].textContent = target.step_display;
      cells[2].className = "step-" + target.step;
      cells[3].textContent = target.previous_image || "-";
      cells[4].textContent = target.error;
    });
    return status.is_open;
  }

  async function poll() {
    try {
      const response = await fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
      if (response.ok && !update(await response.json())) return;  // finished: nothing more will change
    } catch (error) {
      // The next poll tries again.
    }
    setTimeout(poll, POLL_MS);
  }
  setTimeout(poll, POLL_MS);
})();
