// The approver page. Statement text and reasons come from agents: they are only ever set as
// text, never parsed as HTML. Where the gateway has a sign-in provider, approvers sign in (a
// session cookie the script cannot read; changes carry the session's CSRF token); elsewhere
// they paste a token, kept for this tab only.
"use strict";

let token = sessionStorage.getItem("sluice-approver-token") || "";
// "session" once signed in, "sign-in" while the provider waits, "token" without a provider.
let mode = "";
let csrf = "";

function text(tag, value, className) {
  const element = document.createElement(tag);
  element.textContent = value;
  if (className) element.className = className;
  return element;
}

function age(created) {
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - created));
  if (seconds < 60) return seconds + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m";
  return Math.floor(seconds / 3600) + "h";
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (mode === "session") {
    headers["X-Sluice-CSRF"] = csrf;
  } else {
    headers["Authorization"] = "Bearer " + token;
  }
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function show(id, message) {
  document.getElementById(id).textContent = message;
}

async function decide(request, verb, reason) {
  try {
    const answer = await api("POST", "/v1/approvals/" + encodeURIComponent(request) + "/" + verb,
      reason ? { reason } : {});
    show("error", "");
    show("notice", request + ": " + (answer.status === "pending"
      ? "vote recorded (" + answer.votes.filter((v) => v.approve).length + " of " + answer.approvals_needed + ")"
      : answer.status));
  } catch (e) {
    show("notice", "");
    show("error", request + ": " + e.message);
  }
  refresh();
}

function row(request) {
  const tr = document.createElement("tr");
  tr.dataset.id = request.id;
  tr.append(text("td", request.id));
  // Only the display fields: agent text with control, bidirectional and invisible characters
  // shown escaped.
  const shown = request.display;
  tr.append(text("td", shown.subject + " @ " + shown.database));
  const statement = document.createElement("td");
  if (shown.access) {
    // A request for access: what the token will grant, and the requester's own words.
    statement.append(text("div", "access: " + shown.access, "access"));
    statement.append(text("pre", "because: " + shown.requester_reason));
  } else {
    statement.append(text("pre", shown.statement));
  }
  if (shown.parameters.length > 0) {
    statement.append(text("pre", "parameters: " + shown.parameters.join(" ")));
  }
  // What names in it mean: it is approved as read after these statements of the session.
  if (shown.settings.length > 0) {
    statement.append(text("pre", "after: " + shown.settings.join("\n       "), "settings"));
  }
  tr.append(statement);
  const why = document.createElement("td");
  why.append(text("div", shown.plugin + ": " + shown.reason));
  // A routing plugin's note is written for chat and repeats the policy's reason: show only
  // what it adds.
  if (shown.note && !shown.note.includes(shown.reason)) {
    why.append(text("div", shown.note, "note"));
  }
  why.append(text("div", request.approvals_needed + " of " + shown.approver_groups.join(" | ") +
    (request.routed_by ? " (routed by " + request.routed_by + ")" : ""), "route"));
  tr.append(why);
  tr.append(text("td", age(request.created)));
  const actions = document.createElement("td");
  actions.className = "actions";
  const reason = document.createElement("input");
  reason.placeholder = "reason";
  reason.className = "reason";
  const approve = text("button", "Approve", "approve");
  approve.addEventListener("click", () => decide(request.id, "approve", reason.value));
  const deny = text("button", "Deny", "deny");
  deny.addEventListener("click", () => decide(request.id, "deny", reason.value));
  actions.append(reason, approve, deny);
  tr.append(actions);
  return tr;
}

// Signed in, waiting for a sign-in, or (no provider here) a pasted token.
async function account() {
  const response = await fetch("/v1/session", { credentials: "same-origin" });
  const answer = await response.json().catch(() => ({}));
  if (response.ok) {
    mode = "session";
    csrf = answer.csrf;
    document.getElementById("who").textContent = answer.subject;
    document.getElementById("account").hidden = false;
  } else if (answer.sign_in) {
    mode = "sign-in";
    document.getElementById("sign-in").hidden = false;
  } else {
    mode = "token";
    document.getElementById("login").hidden = false;
  }
}

function recentRow(request) {
  const tr = document.createElement("tr");
  tr.dataset.id = request.id;
  const shown = request.display;
  tr.append(text("td", request.id));
  tr.append(text("td", shown.subject + " @ " + shown.database));
  tr.append(text("td", shown.access ? "access: " + shown.access : shown.statement));
  tr.append(text("td", request.status, "status"));
  tr.append(text("td", shown.votes.join("; ")));
  return tr;
}

async function refresh() {
  if (mode === "sign-in") {
    document.getElementById("empty").hidden = true;
    show("error", "Sign in to see the queue.");
    return;
  }
  if (mode === "token" && !token) {
    // Whether anything waits is unknown until a token shows the queue.
    document.getElementById("empty").hidden = true;
    show("error", "Paste an approver token to see the queue.");
    return;
  }
  try {
    const pending = await api("GET", "/v1/approvals");
    const body = document.getElementById("pending");
    // Rows keep their reason inputs across refreshes.
    const seen = new Set(pending.map((r) => r.id));
    for (const tr of [...body.children]) {
      if (!seen.has(tr.dataset.id)) tr.remove();
    }
    const shown = new Set([...body.children].map((tr) => tr.dataset.id));
    for (const request of pending) {
      if (!shown.has(request.id)) body.append(row(request));
    }
    document.getElementById("empty").hidden = pending.length > 0;
    if (document.getElementById("error").textContent.startsWith("Paste")) show("error", "");
    const recent = await api("GET", "/v1/approvals/recent");
    document.getElementById("recent").replaceChildren(...recent.map(recentRow));
  } catch (e) {
    show("error", e.message);
  }
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("sluice-approver-token", token);
  refresh();
});

document.getElementById("revoke").addEventListener("submit", async (event) => {
  event.preventDefault();
  const kind = document.getElementById("revoke-kind").value;
  const value = document.getElementById("revoke-value").value.trim();
  const reason = document.getElementById("revoke-reason").value.trim();
  try {
    const revocation = await api("POST", "/v1/revocations", { [kind]: value, reason });
    show("error", "");
    show("notice", "revoked: " + revocation.id + " (" + revocation.kind + " " + revocation.value + ")");
  } catch (e) {
    show("notice", "");
    show("error", "revocation refused: " + e.message);
  }
});

document.getElementById("sign-out").addEventListener("click", async () => {
  await api("POST", "/approvals/sign-out").catch(() => {});
  location.reload();
});

account().then(refresh);
setInterval(refresh, 2000);
