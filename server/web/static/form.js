// The upload-and-wait form: uploads each photo as it is dropped (showing its verdict), starts the
// job, follows its progress, then opens the gallery. Without JavaScript the form posts everything
// at once and the job page refreshes itself.
(function () {
  "use strict";
  var form = document.getElementById("start-form");
  if (!form) return;
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var drop = document.getElementById("drop");
  var input = document.getElementById("photos-input");
  var list = document.getElementById("photo-list");
  var startButton = document.getElementById("start");
  var errorBox = document.getElementById("form-error");
  var identityField = document.getElementById("identity-id");
  var pending = Promise.resolve();
  var uploads = 0;

  function showError(message) { errorBox.textContent = message; errorBox.hidden = !message; }

  function call(method, url, body) {
    var headers = { "X-CSRFToken": csrf, "Accept": "application/json" };
    if (body && !(body instanceof FormData)) { headers["Content-Type"] = "application/json"; body = JSON.stringify(body); }
    return fetch(url, { method: method, headers: headers, body: body, credentials: "same-origin" }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) {
          var e = data.error || {};
          throw new Error((e.code ? e.code + ": " : "") + (e.message || ("HTTP " + r.status)));
        }
        return data;
      });
    });
  }

  function identity() {
    if (identityField.value) return Promise.resolve(identityField.value);
    return call("POST", "/identities", { name: "my photos" }).then(function (d) { identityField.value = d.id; return d.id; });
  }

  function row(file) {
    var li = document.createElement("li");
    li.className = "uploading";
    var img = document.createElement("img");
    img.alt = "";
    img.src = URL.createObjectURL(file);
    var name = document.createElement("span"); name.className = "name"; name.textContent = file.name;
    var verdict = document.createElement("span"); verdict.className = "verdict"; verdict.textContent = "uploading…";
    li.append(img, name, verdict);
    li.dataset.file = file.name;
    list.appendChild(li);
    return li;
  }

  function showVerdict(li, p) {
    var verdict = li.querySelector(".verdict");
    li.className = p.accepted === false ? "bad" : "ok";
    verdict.textContent = p.accepted === false ? "rejected: " + (p.reasons || []).join(", ") : "accepted";
    if (p.message) { var why = document.createElement("span"); why.className = "why"; why.textContent = p.message; li.appendChild(why); }
    if (p.id) li.dataset.photoId = p.id;
  }

  function upload(file) {
    var li = row(file);
    uploads += 1;
    pending = pending.then(identity).then(function (id) {
      var data = new FormData();
      data.append("photos", file, file.name);
      return call("POST", "/identities/" + id + "/photos", data);
    }).then(function (d) { showVerdict(li, d.photos[0]); }, function (err) {
      showVerdict(li, { accepted: false, reasons: [], message: err.message });
      var code = err.message.split(":")[0];
      li.querySelector(".verdict").textContent = "rejected: " + code;
    }).then(function () { uploads -= 1; });
  }

  function addFiles(files) { Array.prototype.forEach.call(files, upload); input.value = ""; }

  input.addEventListener("change", function () { addFiles(input.files); });
  ["dragenter", "dragover"].forEach(function (t) {
    drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (t) {
    drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) { addFiles(e.dataTransfer.files); });

  function markReference(report) {
    if (!report || !report.photos) return;
    report.photos.forEach(function (p) {
      var li = list.querySelector('li[data-photo-id="' + p.photo_id + '"]');
      if (!li) return;
      if (p.reference && !li.querySelector(".ref")) {
        li.classList.add("reference");
        var tag = document.createElement("span"); tag.className = "ref"; tag.textContent = "reference";
        li.insertBefore(tag, li.querySelector(".why"));
      }
      if (p.accepted === false && !li.classList.contains("bad")) {
        li.className = "bad";
        li.querySelector(".verdict").textContent = "rejected: " + (p.reasons || []).join(", ");
      }
    });
  }

  function follow(job) {
    var progress = document.getElementById("progress");
    var bar = document.getElementById("bar");
    var label = document.getElementById("stage-label");
    var percent = document.getElementById("percent");
    progress.hidden = false;
    function tick() {
      call("GET", job.status_url).then(function (j) {
        bar.value = j.progress;
        label.textContent = j.label;
        percent.textContent = Math.round(j.progress * 100) + "%";
        markReference(j.report);
        if (j.state === "succeeded" || j.state === "failed" || j.state === "cancelled") {
          window.location.assign(job.page_url);
        } else {
          window.setTimeout(tick, 500);
        }
      }, function (err) { showError(err.message); window.setTimeout(tick, 2000); });
    }
    tick();
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    showError("");
    var checked = function (name) {
      return Array.prototype.map.call(form.querySelectorAll('input[name="' + name + '"]:checked'), function (c) { return c.value; });
    };
    var templates = checked("templates"), styles = checked("styles");
    var mode = (form.querySelector('input[name="mode"]:checked') || { value: "templates" }).value;
    var count = form.querySelector("#count") ? form.querySelector("#count").value : "";
    startButton.disabled = true;
    pending.then(function () {
      if (!identityField.value) throw new Error("add some photos first");
      return call("POST", "/jobs", { identity_id: identityField.value, templates: templates, mode: mode,
                                     styles: styles, count: count });
    }).then(follow, function (err) { showError(err.message); startButton.disabled = false; });
  });
})();
