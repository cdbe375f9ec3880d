// The upload page: architecture search as you type, the upload with its progress (XHR, so
// the browser reports bytes sent), then waiting for the check and opening its report.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var form = document.getElementById("check-form");
  var archBox = document.getElementById("architecture");
  var list = document.getElementById("arch-list");
  var errorBox = document.getElementById("form-error");
  var progress = document.getElementById("upload-progress");
  var progressText = document.getElementById("progress-text");
  var active = -1, pending = null, timer = null;


  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  function problemText(status, body) {
    try {
      var problem = JSON.parse(body);
      return (problem.title || "Error") + " (" + status + "): " + (problem.detail || "");
    } catch (e) {
      return "The server answered " + status + ".";
    }
  }

  // ---- architecture search: names that start with the text first, then names that hold it
  var LIMIT = 20;

  function names(query, signal) {
    return fetch("/v1/architectures?limit=" + LIMIT + "&q=" + encodeURIComponent(query), { signal: signal, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : { items: [] }; })
      .then(function (page) { return page.items.map(function (item) { return item.name; }); });
  }

  function choose(index) {
    var items = list.querySelectorAll("li");
    active = Math.max(-1, Math.min(index, items.length - 1));
    items.forEach(function (li, i) { li.setAttribute("aria-selected", String(i === active)); });
    if (active >= 0) items[active].scrollIntoView({ block: "nearest" });
  }

  function close() {
    list.hidden = true;
    archBox.setAttribute("aria-expanded", "false");
    active = -1;
  }

  function show(found) {
    list.replaceChildren();
    found.forEach(function (name) {
      var li = document.createElement("li");
      li.setAttribute("role", "option");
      li.textContent = name;
      li.addEventListener("mousedown", function (event) {
        event.preventDefault();
        archBox.value = name;
        close();
      });
      list.appendChild(li);
    });
    list.hidden = found.length === 0;
    archBox.setAttribute("aria-expanded", String(!list.hidden));
    active = -1;
  }

  function search() {
    var text = archBox.value.trim();
    if (!text) { close(); return; }
    if (pending) pending.abort();
    pending = new AbortController();
    var signal = pending.signal;
    if (/[*?[]/.test(text)) { names(text, signal).then(show).catch(function () {}); return; }
    names(text + "*", signal)
      .then(function (first) {
        // Shortest first: "resnet18" before "resnet18d" (the server sorts by name).
        var bare = function (n) { return n.slice(n.indexOf(":") + 1); };
        first.sort(function (a, b) { return bare(a).length - bare(b).length || (a < b ? -1 : 1); });
        if (first.length >= LIMIT) return first;
        return names("*" + text + "*", signal).then(function (more) {
          return first.concat(more.filter(function (n) { return first.indexOf(n) < 0; })).slice(0, LIMIT);
        });
      })
      .then(show)
      .catch(function () {});
  }

  archBox.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(search, 120);
  });
  archBox.addEventListener("blur", close);
  archBox.addEventListener("keydown", function (event) {
    if (list.hidden) return;
    if (event.key === "ArrowDown") { choose(active + 1); event.preventDefault(); }
    else if (event.key === "ArrowUp") { choose(active - 1); event.preventDefault(); }
    else if (event.key === "Escape") { close(); }
    else if (event.key === "Enter" && active >= 0) {
      archBox.value = list.querySelectorAll("li")[active].textContent;
      close();
      event.preventDefault();
    }
  });

  // ---- upload and wait
  function size(bytes) {
    var units = ["B", "KiB", "MiB", "GiB"], i = 0;
    while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
    return bytes.toFixed(i ? 1 : 0) + " " + units[i];
  }

  function follow(check) {
    if (check.status === "succeeded") {
      window.location.assign("/v1/checks/" + encodeURIComponent(check.id) + "/report.html");
      return;
    }
    if (check.status === "failed") {
      var problem = check.error || {};
      showError("The check failed: " + (problem.title || "") + ". " + (problem.detail || ""));
      document.getElementById("submit").disabled = false;
      return;
    }
    progressText.textContent = "Checking: " + check.progress.stage + "…";
    fetch("/v1/checks/" + encodeURIComponent(check.id) + "?wait=20", { credentials: "same-origin" })
      .then(function (r) {
        return r.text().then(function (body) {
          if (!r.ok) throw new Error(problemText(r.status, body));
          return JSON.parse(body);
        });
      })
      .then(follow)
      .catch(function (e) { showError(e.message); document.getElementById("submit").disabled = false; });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    showError("");
    var options = {};
    var kwargsText = document.getElementById("kwargs").value.trim();
    if (kwargsText) {
      try { options.architecture_kwargs = JSON.parse(kwargsText); }
      catch (e) { showError("The kwargs are not valid JSON: " + e.message); return; }
      if (typeof options.architecture_kwargs !== "object" || Array.isArray(options.architecture_kwargs) || options.architecture_kwargs === null) {
        showError("The kwargs must be a JSON object, such as {\"num_classes\": 10}."); return;
      }
    }
    if (document.getElementById("merge").checked) options.merge = { format: "safetensors" };
    var file = document.getElementById("file").files[0];
    // Fields before the file: the server can refuse a bad name or options before the bytes.
    var body = new FormData();
    body.append("architecture", archBox.value.trim());
    body.append("options", JSON.stringify(options));
    body.append("file", file, file.name);

    var xhr = new XMLHttpRequest();
    var started = performance.now();
    xhr.open("POST", "/v1/checks?wait=5");
    if (csrf) xhr.setRequestHeader("X-CSRF-Token", csrf); // the key cookie's CSRF guard
    document.getElementById("progress-box").hidden = false;
    document.getElementById("submit").disabled = true;
    progress.value = 0;
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) return;
      var seconds = Math.max((performance.now() - started) / 1000, 0.001);
      progress.value = e.loaded / e.total;
      progressText.textContent = "Uploading " + size(e.loaded) + " of " + size(e.total) + " (" + size(e.loaded / seconds) + "/s)";
    });
    xhr.upload.addEventListener("load", function () {
      progress.value = 1;
      progressText.textContent = "Uploaded " + size(file.size) + "; checking…";
    });
    xhr.addEventListener("load", function () {
      if (xhr.status === 200 || xhr.status === 202) { follow(JSON.parse(xhr.responseText)); return; }
      showError(problemText(xhr.status, xhr.responseText));
      document.getElementById("submit").disabled = false;
    });
    xhr.addEventListener("error", function () {
      showError("The upload failed: the connection was lost.");
      document.getElementById("submit").disabled = false;
    });
    xhr.send(body);
  });
})();
