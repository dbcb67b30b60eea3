/* labkeep: small progressive enhancements. Every page works without this file. */
"use strict";
(function () {
  // Copy buttons: <button data-copy="ID" hidden> copies the value or text of #ID.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target || !navigator.clipboard) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = "value" in target ? target.value : target.textContent;
      navigator.clipboard.writeText(text.trim()).then(function () {
        button.textContent = "Copied";
      }, function () {
        if (target.select) target.select();
        button.textContent = "Press Ctrl+C to copy";
      });
    });
  });

  // Forms with data-confirm="question" ask before they are sent.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // Upload with a progress bar: the same POST (CSRF token in the form data), sent with
  // XMLHttpRequest so that upload progress can be shown; the answer replaces the page.
  var form = document.getElementById("upload");
  if (!form || !window.FormData || !window.XMLHttpRequest) return;
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  var submit = document.getElementById("upload-submit");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.responseType = "document";
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) return;
      bar.hidden = false;
      bar.max = e.total;
      bar.value = e.loaded;
      status.textContent = "Uploading: " + Math.round((100 * e.loaded) / e.total) + " %";
    });
    xhr.upload.addEventListener("load", function () {
      status.textContent = "Uploaded: checking and storing the files…";
    });
    xhr.addEventListener("load", function () {
      var doc = xhr.response;
      if (doc && doc.documentElement) {
        document.replaceChild(document.importNode(doc.documentElement, true), document.documentElement);
        window.scrollTo(0, 0);
      } else {
        status.textContent = "The upload failed (HTTP " + xhr.status + "). Reload the page and try again.";
        submit.disabled = false;
      }
    });
    xhr.addEventListener("error", function () {
      status.textContent = "The upload failed: the connection was lost. Try again.";
      submit.disabled = false;
    });
    submit.disabled = true;
    status.textContent = "Uploading…";
    xhr.send(new FormData(form));
  });
})();
