// The dashboard's only script: "select all" boxes and the 30 s auto-refresh.
// The page works without it (no refresh, no select-all); nothing here talks to the server.
(function () {
  "use strict";

  // "Select all": ticks every enabled box of the same name in the table.
  document.querySelectorAll("input.select-all").forEach(function (all) {
    all.addEventListener("change", function () {
      var table = all.closest("table");
      table.querySelectorAll('input[type=checkbox][name="' + all.dataset.target + '"]')
        .forEach(function (box) { if (!box.disabled) { box.checked = all.checked; } });
    });
  });

  // Auto-refresh: reload the same URL (it carries the filter, the search and the page),
  // unless someone is typing a reason, has ticked rows or opened an inline form.
  var seconds = parseInt(document.body.dataset.refresh || "0", 10);
  if (!seconds) { return; }
  var note = document.getElementById("refresh-note");

  function busy() {
    var active = document.activeElement;
    if (active && ["INPUT", "TEXTAREA", "SELECT"].indexOf(active.tagName) !== -1 &&
        active.type !== "checkbox") { return true; }
    if (document.querySelector("tbody input[type=checkbox]:checked")) { return true; }
    if (document.querySelector(
      "details.inline-action[open], td.raw details[open], details.pause-control[open]")) {
      return true;
    }
    var typed = Array.prototype.some.call(
      document.querySelectorAll("input[name=reason]"), function (i) { return i.value !== ""; });
    return typed;
  }

  function tick() {
    if (busy()) {
      if (note) { note.textContent = "Auto-refresh paused while you edit; it resumes after."; }
      window.setTimeout(tick, seconds * 1000);
      return;
    }
    window.location.reload();
  }
  window.setTimeout(tick, seconds * 1000);
})();
