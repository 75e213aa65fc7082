// Vigo Enroll console: the little the pages do with JavaScript. Every page
// works without it; this only keeps live parts fresh and copies text.
//
// An element with data-live="N" is refreshed every N seconds while the
// page is visible: the page is fetched again and the element with the same
// id replaced by the new one. The server renders (and escapes) everything;
// nothing here builds HTML.
"use strict";

(function () {
  function refresh(el) {
    if (document.hidden) {
      return Promise.resolve();
    }
    // The live header tells the server this is not the operator's
    // activity: a tab left open still times out.
    return fetch(window.location.href, { headers: { "X-Vigo-Live": "1" }, credentials: "same-origin", redirect: "manual" })
      .then(function (resp) {
        if (resp.type === "opaqueredirect" || resp.status === 401) {
          window.location.reload(); // signed out: show the sign-in page
          return;
        }
        if (!resp.ok) {
          return;
        }
        return resp.text().then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById(el.id);
          if (fresh) {
            el.replaceWith(document.importNode(fresh, true));
          }
        });
      })
      .catch(function () { /* offline for a moment: try again later */ });
  }

  function live(id, seconds) {
    var tick = function () {
      var el = document.getElementById(id);
      if (!el) {
        return;
      }
      refresh(el).then(function () { window.setTimeout(tick, seconds * 1000); });
    };
    window.setTimeout(tick, seconds * 1000);
  }

  document.querySelectorAll("[data-live]").forEach(function (el) {
    var seconds = parseInt(el.getAttribute("data-live"), 10);
    if (el.id && seconds > 0) {
      live(el.id, seconds);
    }
  });

  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.value || source.textContent).then(function () {
        button.textContent = "Copied";
      });
    });
  });
})();
