// The Notifications page: desktop permission, the form's target-specific fields, and what
// this device showed recently.

import { h, replace } from "../core.js";
import { recent } from "../notify.js";

const state = document.getElementById("desktop-state");
const enable = document.getElementById("desktop-enable");

function showPermission() {
  if (!("Notification" in window)) {
    state.textContent = "This browser cannot show desktop notifications.";
    return;
  }
  const p = Notification.permission;
  state.textContent = p === "granted" ? "Desktop notifications are on for this browser."
    : p === "denied" ? "Desktop notifications are blocked for this site (change it in the browser's settings)."
      : "";
  enable.hidden = p !== "default";
}

enable.addEventListener("click", async () => {
  await Notification.requestPermission();
  showPermission();
});
showPermission();

// Only the fields of the chosen target.
const target = document.getElementById("id_target");
function showFields() {
  for (const [name, wanted] of [["url", "webhook"], ["email", "email"]]) {
    const field = document.querySelector(`[data-field="${name}"]`);
    if (field) field.hidden = target.value !== wanted;
  }
}
if (target) {
  target.addEventListener("change", showFields);
  showFields();
}

const list = document.getElementById("recent-notifications");
function renderRecent() {
  const items = recent();
  if (!items.length) {
    replace(list, h("li", { class: "muted", text: list.dataset.empty }));
    return;
  }
  replace(list, ...items.map((n) => h("li", { class: "notification-item" },
    h("strong", { text: n.title }), " ", h("span", { text: n.body }),
    " ", h("span", { class: "muted small", text: new Date(n.at).toLocaleTimeString() }))));
}
document.addEventListener("radical-notification", renderRecent);
renderRecent();
