// adapterhub: the only script of the web pages. On a job's page it polls the job's status, shows
// its progress, and opens the new adapter's page once the job is done. Everything else works
// without script (and the job page refreshes itself when script is off).
"use strict";
(function () {
  var box = document.getElementById("job");
  if (!box || !box.dataset.statusUrl || box.dataset.done === "true") return;
  function show(job) {
    document.getElementById("job-status").textContent = job.status;
    var stages = document.getElementById("job-stages");
    stages.replaceChildren();
    job.stages.forEach(function (s) {
      var row = document.createElement("div");
      row.className = "stage";
      var name = document.createElement("span");
      name.textContent = s.stage;
      var bar = document.createElement("progress");
      bar.max = s.total || 1;
      bar.value = s.done;
      var count = document.createElement("span");
      count.textContent = s.done + "/" + s.total;
      row.append(name, bar, count);
      stages.append(row);
    });
  }
  function poll() {
    fetch(box.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (job) {
        show(job);
        if (job.adapter_url) { window.location.assign(job.adapter_url); return; }
        if (job.done) { window.location.reload(); return; }
        setTimeout(poll, 500);
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 300);
})();
