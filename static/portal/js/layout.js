// What every page shares besides live updates: the top bar's menu on narrow screens, a
// confirmation before forms marked data-confirm are sent, and copy buttons.

import { confirmAction } from "./confirm.js";

const toggle = document.getElementById("menu-toggle");
const menu = document.getElementById("topbar-menu");
if (toggle && menu) {
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    menu.classList.toggle("open", open);
  });
}

// <form data-confirm="Question?" data-confirm-detail="…" data-confirm-label="Revoke">: one
// click on its button asks first; the form is sent only when the person confirms.
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", async (event) => {
    if (form.dataset.confirmed === "yes") {
      delete form.dataset.confirmed;
      return;
    }
    event.preventDefault();
    const submitter = event.submitter || null;
    const ok = await confirmAction({
      title: form.dataset.confirm,
      text: form.dataset.confirmDetail || "",
      confirmLabel: form.dataset.confirmLabel || (submitter && submitter.textContent.trim()) || "Confirm",
      danger: true,
    });
    if (!ok) return;
    form.dataset.confirmed = "yes";
    form.requestSubmit(submitter);
  });
}

// <button data-copy="element-id">: copies that element's value or text.
for (const button of document.querySelectorAll("button[data-copy]")) {
  button.addEventListener("click", async () => {
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    const text = "value" in source && source.tagName !== "BUTTON" ? source.value : source.textContent;
    const status = button.parentElement.querySelector("[data-copy-status]");
    try {
      await navigator.clipboard.writeText(text);
      if (status) status.textContent = "Copied.";
    } catch {
      // No clipboard access (plain HTTP on another host): select the text for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents(source);
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      if (status) status.textContent = "Selected: press Ctrl+C to copy.";
    }
  });
}
