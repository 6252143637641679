// Runs signed example scripts: each `.sr-example` element holds a signed job in `data-job` (and, on another
// site, the responder's address in `data-responder`). Run POSTs the job to /jobs, polls /jobs/{id} and shows
// what happened. Everything the job printed is set with textContent, so it is shown, never interpreted.
"use strict";

(() => {
  const FINISHED = new Set(["succeeded", "failed", "timed_out", "cancelled", "interrupted"]);
  const POLL_DELAYS_MS = [200, 300, 500, 1000];

  function make(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined) element.textContent = text;
    return element;
  }

  // The result area, built on first use so an embedding page needs only the `.sr-example` element.
  function resultView(container) {
    let result = container.querySelector(".sr-result");
    if (!result) {
      result = make("div", "sr-result");
      const status = make("p", "sr-status");
      status.setAttribute("role", "status");
      const facts = make("dl", "facts");
      facts.append(make("dt", "", "Exit status"), make("dd", "sr-exit-status"),
                   make("dt", "", "Duration"), make("dd", "sr-duration"));
      result.append(status, facts, make("h3", "", "stdout"), make("pre", "sr-stdout"),
                    make("h3", "", "stderr"), make("pre", "sr-stderr"));
      container.append(result);
    }
    const part = (name) => result.querySelector(".sr-" + name);
    return {
      result, status: part("status"), exitStatus: part("exit-status"), duration: part("duration"),
      stdout: part("stdout"), stderr: part("stderr"),
    };
  }

  function showState(view, state, message) {
    view.result.dataset.state = state;
    view.status.textContent = message;
  }

  function clear(view) {
    for (const element of [view.exitStatus, view.duration, view.stdout, view.stderr]) element.textContent = "";
  }

  async function answerOf(response) {
    try {
      return await response.json();
    } catch {
      return {};
    }
  }

  function refusal(response, answer) {
    let text = `Refused by the responder (${response.status}${answer.error ? " " + answer.error : ""})`;
    if (answer.detail) text += ": " + answer.detail;
    if (/expired/.test(answer.detail || "")) text += ". Reload the page for a freshly signed script.";
    return text;
  }

  function showJob(view, job) {
    const succeeded = job.status === "succeeded";
    let message = succeeded ? "Finished: succeeded" : "Finished: " + job.status.replace("_", " ");
    if (job.signal) message += ` (${job.signal})`;
    if (job.error) message += ": " + job.error;
    showState(view, succeeded ? "succeeded" : "failed", message);
    view.exitStatus.textContent = job.exit_status === null || job.exit_status === undefined
      ? "none" : String(job.exit_status);
    view.duration.textContent = typeof job.duration_s === "number" ? job.duration_s.toFixed(2) + " s" : "—";
    view.stdout.textContent = job.stdout || "";
    view.stderr.textContent = job.stderr || "";
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function run(container, button) {
    const view = resultView(container);
    const base = (container.dataset.responder || "").replace(/\/+$/, "");
    clear(view);
    let job;
    try {
      job = JSON.parse(container.dataset.job);
    } catch {
      showState(view, "error", "This example has no valid signed job (data-job is not JSON).");
      return;
    }
    button.disabled = true;
    showState(view, "running", "Running…");
    try {
      let response = await fetch(base + "/jobs", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(job),
        credentials: "omit",
      });
      let answer = await answerOf(response);
      if (!response.ok) {
        showState(view, "error", refusal(response, answer));
        return;
      }
      const jobUrl = base + "/jobs/" + encodeURIComponent(answer.id);
      for (let poll = 0; !FINISHED.has(answer.status); poll++) {
        showState(view, "running", answer.status === "queued" ? "Queued…" : "Running…");
        await sleep(POLL_DELAYS_MS[Math.min(poll, POLL_DELAYS_MS.length - 1)]);
        response = await fetch(jobUrl, { credentials: "omit", cache: "no-store" });
        answer = await answerOf(response);
        if (!response.ok) {
          showState(view, "error", refusal(response, answer));
          return;
        }
      }
      showJob(view, answer);
    } catch (error) {
      showState(view, "error", "Could not reach the responder: " + error.message);
    } finally {
      button.disabled = false;
    }
  }

  function setUp(container) {
    let button = container.querySelector(".sr-run");
    if (!button) {
      button = make("button", "sr-run", "Run");
      button.type = "button";
      container.append(button);
    }
    button.addEventListener("click", () => run(container, button));
  }

  function setUpAll() {
    document.querySelectorAll(".sr-example").forEach(setUp);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUpAll);
  } else {
    setUpAll();
  }
})();
