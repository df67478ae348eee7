// The tokens page: a new token, shown once, is selected on focus and copied with one click.

const input = document.getElementById("new-token");
const button = document.getElementById("copy-token");
const status = document.getElementById("copy-status");

if (input && button) {
  input.addEventListener("focus", () => input.select());
  button.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      status.textContent = "Copied.";
    } catch {
      // No clipboard access (plain HTTP on another host): the token is selected for Ctrl+C.
      status.textContent = "Selected: press Ctrl+C to copy.";
    }
  });
}
