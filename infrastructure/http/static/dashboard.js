// lowrouter dashboard: copy-to-clipboard, and the local time beside UTC on hover. Every action
// works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    const status = document.querySelector(`[data-copy-status="${button.dataset.copy}"]`);
    if (!field) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      let copied = false;
      try {
        await navigator.clipboard.writeText(field.value);
        copied = true;
      } catch (_error) {
        field.focus();
        field.select();
        copied = document.execCommand && document.execCommand("copy");
      }
      if (status) {
        status.textContent = copied
          ? "Copied. Store it now: it is not shown again."
          : "Select the token and copy it (Ctrl+C or Cmd+C).";
      }
    });
  }
  // Times are written in UTC; the tooltip adds the reader's own time zone.
  for (const time of document.querySelectorAll("time[datetime]")) {
    const moment = new Date(time.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime())) continue;
    const local = moment.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
      timeZoneName: "short",
    });
    time.title = `${time.textContent.trim()} · your time: ${local}`;
  }
  for (const field of document.querySelectorAll("input.token")) {
    field.addEventListener("focus", () => field.select());
  }
});
