// lowrouter dashboard: the one script, for copy-to-clipboard. Every other action works without it.
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
  for (const field of document.querySelectorAll("input.token")) {
    field.addEventListener("focus", () => field.select());
  }
});
