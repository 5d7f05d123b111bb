// Model output as Markdown with highlighted code. Never trusted: marked's HTML goes through DOMPurify before it
// reaches the page (and the server's Content-Security-Policy forbids inline script besides).

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "option"],
  FORBID_ATTR: ["style"],
};

export function renderMarkdown(element, text) {
  const html = window.marked.parse(text, { gfm: true, breaks: false, async: false });
  element.innerHTML = window.DOMPurify.sanitize(html, PURIFY);
  for (const code of element.querySelectorAll("pre code")) highlight(code);
  for (const link of element.querySelectorAll("a[href]")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
}

// JSON mode's answers: one code block, as text.
export function renderJson(element, text) {
  const pre = document.createElement("pre");
  const code = document.createElement("code");
  code.className = "language-json";
  code.textContent = text;
  pre.append(code);
  element.replaceChildren(pre);
  highlight(code);
}

function highlight(code) {
  const language = [...code.classList].find((c) => c.startsWith("language-"));
  if (language && !window.hljs.getLanguage(language.slice(9))) {
    code.classList.add("hljs"); // a language highlight.js does not know: shown as plain text, in the same frame
    return;
  }
  window.hljs.highlightElement(code);
}
