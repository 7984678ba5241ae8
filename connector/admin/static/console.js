// The admin console's only script: refresh the overview's live part, and send the
// buttons' POSTs to the API (with the console's header; the session cookie goes along).
"use strict";

function flash(text, bad) {
  const el = document.getElementById("flash");
  if (!el) return;
  el.textContent = text;
  el.className = bad ? "bad" : "";
}

async function refresh() {
  const live = document.getElementById("live");
  if (!live) return;
  try {
    const answer = await fetch(live.dataset.refresh, { credentials: "same-origin" });
    if (answer.redirected || answer.status === 401) { window.location = "/login"; return; }
    if (answer.ok) live.innerHTML = await answer.text();
  } catch (err) {
    flash("the connector does not answer: " + err, true);
  }
}

async function post(button) {
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  button.disabled = true;
  try {
    const answer = await fetch(button.dataset.post, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-KEC-Console": "1", "Accept": "application/json" },
    });
    const body = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      flash((body.error || answer.status) + ": " + (body.detail || answer.statusText), true);
      button.disabled = false;
      return;
    }
    flash("done: " + JSON.stringify(body), false);
    const row = button.closest("tr");
    if (button.dataset.post.endsWith("/replay") && row) {
      row.classList.add("replayed");
      button.textContent = "Replayed";
    } else if (document.getElementById("live")) {
      await refresh();
    } else {
      window.location.reload();
    }
  } catch (err) {
    flash("request failed: " + err, true);
    button.disabled = false;
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-post]");
  if (button) post(button);
});

if (document.getElementById("live")) setInterval(refresh, 5000);
