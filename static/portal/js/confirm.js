// Asking before an action that cannot be undone (cancel a job, revoke a token): a modal
// <dialog> whose default button is the safe one, so Enter or Escape never confirm.

let dialog = null;

function build() {
  dialog = document.createElement("dialog");
  dialog.className = "confirm";
  dialog.setAttribute("aria-labelledby", "confirm-title");
  dialog.setAttribute("aria-describedby", "confirm-text");
  const title = document.createElement("h2");
  title.id = "confirm-title";
  const text = document.createElement("p");
  text.id = "confirm-text";
  const actions = document.createElement("div");
  actions.className = "form-actions";
  const keep = document.createElement("button");
  keep.type = "button";
  keep.className = "btn";
  keep.dataset.answer = "no";
  const yes = document.createElement("button");
  yes.type = "button";
  yes.className = "btn danger";
  yes.dataset.answer = "yes";
  actions.append(keep, yes);
  dialog.append(title, text, actions);
  document.body.appendChild(dialog);
}

/**
 * Ask the person; resolves true only if they press the confirm button.
 * options: title, text, confirmLabel, cancelLabel ("Keep it" by default), danger.
 */
export function confirmAction({ title, text = "", confirmLabel = "Confirm", cancelLabel = "Keep it", danger = true } = {}) {
  if (!dialog) build();
  const [keep, yes] = dialog.querySelectorAll("button");
  dialog.querySelector("#confirm-title").textContent = title || "Are you sure?";
  const body = dialog.querySelector("#confirm-text");
  body.textContent = text;
  body.hidden = !text;
  keep.textContent = cancelLabel;
  yes.textContent = confirmLabel;
  yes.className = danger ? "btn danger" : "btn primary";
  return new Promise((resolve) => {
    const done = (answer) => {
      keep.removeEventListener("click", no);
      yes.removeEventListener("click", ok);
      dialog.removeEventListener("close", no);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const ok = () => done(true);
    const no = () => done(false);
    keep.addEventListener("click", no);
    yes.addEventListener("click", ok);
    dialog.addEventListener("close", no);
    dialog.showModal();
    keep.focus();
  });
}
