// The report page: the key table (filter + pages over the embedded rows), copy buttons,
// expand/collapse of the module tree. Rows are built with textContent only: keys are
// hostile strings and never become markup.
(function () {
  "use strict";
  var PAGE = 100;
  var data = JSON.parse(document.getElementById("keys-data").textContent);
  var kinds = data.kinds, reasons = data.reasons, details = data.details;
  var matchedKind = kinds.indexOf("matched");
  var rows = data.rows.concat(data.matched.map(function (key) { return [matchedKind, key, 0, 0, ""]; }));
  var haystacks = null; // lower-cased text of each row, built on the first text filter
  var shown = rows, page = 0;
  var body = document.getElementById("key-rows");
  var textBox = document.getElementById("key-filter");
  var kindBox = document.getElementById("kind-filter");
  var reasonBox = document.getElementById("reason-filter");

  kinds.forEach(function (kind, i) {
    kindBox.appendChild(new Option(kind.replace("_", " "), String(i)));
  });
  reasons.forEach(function (reason, i) {
    if (reason) reasonBox.appendChild(new Option(reason, String(i)));
  });

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function draw() {
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    var start = page * PAGE, fragment = document.createDocumentFragment();
    shown.slice(start, start + PAGE).forEach(function (row) {
      var tr = document.createElement("tr");
      cell(tr, row[1], "key");
      cell(tr, kinds[row[0]].replace("_", " "));
      var reason = reasons[row[2]];
      var td = cell(tr, "");
      if (reason) {
        var tag = document.createElement("span");
        tag.className = "tag tone-" + reason.replace(/[^a-z0-9_]/g, "_");
        tag.textContent = reason;
        td.appendChild(tag);
      }
      cell(tr, row[4], "key");
      cell(tr, details[row[3]]);
      fragment.appendChild(tr);
    });
    body.replaceChildren(fragment);
    document.getElementById("key-count").textContent =
      shown.length.toLocaleString() + " of " + rows.length.toLocaleString() + " keys";
    document.getElementById("page-info").textContent = shown.length
      ? "rows " + (start + 1) + "–" + Math.min(start + PAGE, shown.length) + ", page " + (page + 1) + " of " + pages
      : "no key matches";
    document.getElementById("prev-page").disabled = page === 0;
    document.getElementById("next-page").disabled = page >= pages - 1;
  }

  function filter() {
    var text = textBox.value.trim().toLowerCase();
    var kind = kindBox.value, reason = reasonBox.value;
    if (text && haystacks === null) {
      haystacks = rows.map(function (r) {
        return (r[1] + "\u0000" + reasons[r[2]] + "\u0000" + r[4] + "\u0000" + details[r[3]]).toLowerCase();
      });
    }
    var kindIndex = kind === "" || kind === "not-loaded" ? -1 : Number(kind);
    var reasonIndex = reason === "" ? -1 : Number(reason);
    shown = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if (kind === "not-loaded" && r[0] === matchedKind) continue;
      if (kindIndex >= 0 && r[0] !== kindIndex) continue;
      if (reasonIndex >= 0 && r[2] !== reasonIndex) continue;
      if (text && haystacks[i].indexOf(text) < 0) continue;
      shown.push(r);
    }
    page = 0;
    draw();
  }

  var timer = null;
  textBox.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(filter, rows.length > 20000 ? 150 : 40);
  });
  kindBox.addEventListener("change", filter);
  reasonBox.addEventListener("change", filter);
  document.getElementById("prev-page").addEventListener("click", function () { page--; draw(); });
  document.getElementById("next-page").addEventListener("click", function () { page++; draw(); });

  function setOpen(open) {
    document.querySelectorAll("#tree details").forEach(function (d) { d.open = open; });
  }
  document.getElementById("expand-all").addEventListener("click", function () { setOpen(true); });
  document.getElementById("collapse-all").addEventListener("click", function () { setOpen(false); });

  document.querySelectorAll("button.copy").forEach(function (button) {
    button.addEventListener("click", function () {
      var text = button.previousElementSibling.textContent;
      var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () {});
      } else {
        var range = document.createRange();
        range.selectNodeContents(button.previousElementSibling);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        if (document.execCommand("copy")) done();
      }
    });
  });

  draw();
})();
