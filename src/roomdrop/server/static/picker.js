// Choosing files to send (page only; the CLI takes paths): the file input, and files
// dropped anywhere on the page while it is connected. They go to send(files), which
// sends them to the participant chosen in the list (display.js) through outgoing.js.

const $ = (sel) => document.querySelector(sel);

/**
 * @param {object} opts {online() connected to the room, send(files)}
 */
export function watchFiles({ online, send }) {
  $("#file-input").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    if (files.length) send(files);
  });
  const drop = document.body;
  drop.addEventListener("dragover", (event) => {
    if (!online()) return;
    event.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", (event) => {
    if (event.target === drop || !drop.contains(event.relatedTarget)) drop.classList.remove("dragging");
  });
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    if (!online()) return;
    const files = [...(event.dataTransfer?.files || [])];
    if (files.length) send(files);
  });
}
