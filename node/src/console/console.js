// urpnet console: the queue updates itself (progressive enhancement: the
// pages work without this script). On each change committed at this node
// (Server-Sent Events), the queue's rows are fetched again with the page's
// own filters and replaced; the change is announced politely.
(function () {
  "use strict";
  // Ready answers while the operator types a new request.
  var box = document.getElementById("suggest");
  var subject = document.getElementById("c-subject");
  var description = document.getElementById("c-description");
  if (box && subject && description && window.fetch) {
    var timer = null;
    var ask = function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var q = (subject.value + " " + description.value).trim();
        if (q.length < 3) { return; }
        fetch(box.getAttribute("data-suggest") + "?q=" + encodeURIComponent(q), { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) { if (html) { box.innerHTML = html; } })
          .catch(function () {});
      }, 250);
    };
    subject.addEventListener("input", ask);
    description.addEventListener("input", ask);
  }
  var live = document.getElementById("live");
  var rows = document.getElementById("queue-rows");
  if (!live || !rows || !window.EventSource || !window.fetch) { return; }
  var source = new EventSource(live.getAttribute("data-events"));
  var pending = false;
  source.addEventListener("ticket", function (e) {
    if (pending) { return; }
    pending = true;
    setTimeout(function () {
      fetch(window.location.href, { headers: { "X-Fragment": "rows" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          pending = false;
          if (html !== null) {
            rows.innerHTML = html;
            var count = document.getElementById("queue-count");
            if (count) { count.textContent = String(rows.children.length); }
            var lang = document.documentElement.lang;
            live.textContent = (lang === "en" ? "Updated: " : "Aggiornata: ") + e.data;
          }
        })
        .catch(function () { pending = false; });
    }, 100);
  });
})();
