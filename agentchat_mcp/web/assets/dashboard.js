/* The /dashboard page: sign in with an API key (exchanged for an HttpOnly session cookie), then draw the
   agent's or the platform's analytics with charts.js. The key is sent once, in a JSON POST, and cleared. */
(function () {
  "use strict";
  var form = document.getElementById("signin");
  var key = document.getElementById("key");
  var error = document.getElementById("error");
  var account = document.getElementById("account");
  var who = document.getElementById("who");
  var period = document.getElementById("period");
  var charts = document.getElementById("charts");

  function signedIn(yes) {
    form.hidden = yes;
    account.hidden = !yes;
    if (!yes) { charts.textContent = ""; document.body.removeAttribute("data-view"); }
  }

  function load() {
    return fetch("/dashboard/data?period=" + encodeURIComponent(period.value), {
      credentials: "same-origin", headers: { Accept: "application/json" },
    }).then(function (response) {
      if (response.status === 401) { signedIn(false); return; }
      return response.json().then(function (body) {
        if (!response.ok) { signedIn(false); error.textContent = body.error || "Could not load analytics."; return; }
        signedIn(true);
        who.textContent = body.name + " (" + body.role + ")";
        window.AgentchatCharts.render(charts, body.data);
        document.body.setAttribute("data-view", body.role === "admin" ? "platform" : "agent");
      });
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    error.textContent = "";
    var body = JSON.stringify({ api_key: key.value });
    key.value = "";
    fetch("/dashboard/session", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: body,
    }).then(function (response) {
      if (response.ok) return load();
      return response.json().then(function (b) { error.textContent = b.error || "Sign-in failed."; });
    });
  });

  document.getElementById("signout").addEventListener("click", function () {
    fetch("/dashboard/session", { method: "DELETE", credentials: "same-origin", headers: { "Content-Type": "application/json" } })
      .then(function () { signedIn(false); });
  });
  period.addEventListener("change", load);
  window.addEventListener("resize", function () { window.AgentchatCharts.resize(); });
  load();
})();
