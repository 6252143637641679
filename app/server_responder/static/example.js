// Runs signed example scripts: each `.sr-example` element holds a signed job in `data-job` (and, on another
// site, the responder's address in `data-responder`). Run POSTs the job to /jobs, shows its output as it
// arrives from /jobs/{id}/events (polling /jobs/{id} where the stream cannot be had) and what happened.
// Everything the job printed is added as text nodes, so it is shown, never interpreted.
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

  // The job's events until its final record; rejected when the stream is refused, for polling to take over.
  // A dropped connection is resumed by the EventSource itself, from the last event it had.
  function follow(view, jobUrl) {
    return new Promise((resolve, reject) => {
      if (typeof EventSource === "undefined") {
        reject(new Error("this browser has no EventSource"));
        return;
      }
      const source = new EventSource(jobUrl + "/events");
      const data = (event) => JSON.parse(event.data);
      const appendTo = (pre) => (event) => pre.append(document.createTextNode(data(event).text));
      source.addEventListener("stdout", appendTo(view.stdout));
      source.addEventListener("stderr", appendTo(view.stderr));
      source.addEventListener("dropped", (event) => {
        const dropped = data(event);
        const pre = dropped.stream === "stderr" ? view.stderr : view.stdout;
        pre.append(document.createTextNode(`[${dropped.bytes} bytes not shown]\n`));
      });
      source.addEventListener("status", (event) => {
        const status = data(event).status;
        if (!FINISHED.has(status)) showState(view, "running", status === "queued" ? "Queued…" : "Running…");
      });
      source.addEventListener("job", (event) => {
        source.close();
        resolve(data(event));
      });
      source.addEventListener("error", () => {
        if (source.readyState === EventSource.CLOSED) reject(new Error("the event stream was refused"));
      });
    });
  }

  async function poll(view, jobUrl, answer) {
    for (let round = 0; !FINISHED.has(answer.status); round++) {
      showState(view, "running", answer.status === "queued" ? "Queued…" : "Running…");
      await sleep(POLL_DELAYS_MS[Math.min(round, POLL_DELAYS_MS.length - 1)]);
      const response = await fetch(jobUrl, { credentials: "omit", cache: "no-store" });
      answer = await answerOf(response);
      if (!response.ok) throw new Refused(response, answer);
    }
    return answer;
  }

  class Refused extends Error {
    constructor(response, answer) {
      super(refusal(response, answer));
    }
  }

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
      const response = await fetch(base + "/jobs", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(job),
        credentials: "omit",
      });
      let answer = await answerOf(response);
      if (!response.ok) {
        showState(view, "error", refusal(response, answer));
        return;
      }
      const jobUrl = base + "/jobs/" + encodeURIComponent(answer.id);
      if (!FINISHED.has(answer.status)) {
        showState(view, "running", answer.status === "queued" ? "Queued…" : "Running…");
        try {
          answer = await follow(view, jobUrl);
        } catch {
          answer = await poll(view, jobUrl, answer);
        }
      }
      showJob(view, answer);
    } catch (error) {
      showState(view, "error", error instanceof Refused ? error.message
        : "Could not reach the responder: " + error.message);
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
