// The API key: asked for in a dialog when the server answers 401, kept for the tab or remembered in the browser.

import * as store from "./store.js";

const $ = (id) => document.getElementById(id);

export class KeyDialog {
  // onChange runs after the key is set or forgotten (the page then lists the models again).
  constructor(onChange) {
    this.key = store.loadKey();
    this.onChange = onChange;
    $("change-key").addEventListener("click", () => this.ask(""));
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.set($("api-key").value.trim(), $("remember-key").checked);
    });
    $("forget-key").addEventListener("click", () => this.set("", false));
    $("cancel-key").addEventListener("click", () => this.close());
    this.showState();
  }

  ask(reason) {
    $("key-reason").textContent = reason || "";
    $("api-key").value = this.key;
    $("remember-key").checked = store.keyIsRemembered();
    if (!$("key-dialog").open) $("key-dialog").showModal();
  }

  // Chromium gives focus back to the message box after a click in the dialog but, until it is focused anew,
  // drops what is typed into it.
  close() {
    $("key-dialog").close();
    $("message").blur();
    $("message").focus();
  }

  set(key, remember) {
    this.key = key;
    if (key) store.saveKey(key, remember);
    else store.forgetKey();
    this.showState();
    this.close();
    this.onChange();
  }

  showState() {
    $("key-state").textContent = this.key
      ? `A key is set (${store.keyIsRemembered() ? "remembered in this browser" : "for this tab"}).` : "No key set.";
  }
}
