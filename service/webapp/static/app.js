// The web app's only script: the tasks list refreshes itself from /app/tasks.json,
// and a page marked data-refresh="N" reloads every N seconds. Rows are built with
// textContent only: nothing from the server is ever parsed as HTML.
"use strict";

const POLL_MS = 2000;

function cell(text, className) {
  const td = document.createElement("td");
  if (className) {
    const span = document.createElement("span");
    span.className = className;
    span.textContent = text;
    td.appendChild(span);
  } else {
    td.textContent = text;
  }
  return td;
}

function link(href, text, code) {
  const td = document.createElement("td");
  const a = document.createElement("a");
  a.href = href;
  if (code) {
    const c = document.createElement("code");
    c.textContent = text;
    a.appendChild(c);
  } else {
    a.textContent = text;
  }
  td.appendChild(a);
  return td;
}

function taskRow(task) {
  const tr = document.createElement("tr");
  tr.dataset.task = task.id;
  tr.append(
    link("/app/tasks/" + encodeURIComponent(task.id), task.id.slice(0, 8), true),
    cell(task.function),
    link("/app/endpoints/" + encodeURIComponent(task.endpoint_id), task.endpoint, false),
    cell(task.status, "status " + task.status),
    cell(task.submitted),
    cell(task.completed),
    cell(task.duration),
  );
  return tr;
}

async function refreshTasks(table, live) {
  try {
    const response = await fetch(table.dataset.source + window.location.search, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401) {
      window.location.assign("/app/login");
      return;
    }
    if (!response.ok) {
      live.textContent = "refresh failed (" + response.status + ")";
      return;
    }
    const data = await response.json();
    table.tBodies[0].replaceChildren(...data.tasks.map(taskRow));
    document.querySelector(".empty").hidden = data.tasks.length > 0;
    live.textContent = data.pending ? data.pending + " pending, refreshing" : "up to date";
  } catch (error) {
    live.textContent = "refresh failed: " + error.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("tasks");
  const live = document.getElementById("live");
  if (table && live) {
    // The next poll is scheduled once this one is done, and skipped while the tab is
    // hidden: a slow service never has more than one request from a tab.
    const poll = async () => {
      if (!document.hidden) {
        await refreshTasks(table, live);
      }
      window.setTimeout(poll, POLL_MS);
    };
    poll();
  }
  const seconds = Number(document.body.dataset.refresh);
  if (seconds > 0) {
    window.setTimeout(() => window.location.reload(), seconds * 1000);
  }
});
