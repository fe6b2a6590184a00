// The portal's live parts: elements marked data-poll ask the server for a fresh copy of
// themselves through htmx (hx-get, hx-trigger="every …"). This file makes that polite:
// no polling while the tab is hidden and a fresh copy as soon as it shows again; a poll that
// was sent to the login page (the session expired) or refused (403/404: access was taken
// away) reloads the whole page instead of pasting the answer in; and changed desktop or
// session states are announced to screen readers in one short sentence.
(() => {
    const POLLED = "[data-poll]";

    document.addEventListener("htmx:beforeRequest", (event) => {
        if (document.hidden && event.detail.elt.matches(POLLED)) {
            event.preventDefault();
        }
    });

    document.addEventListener("visibilitychange", () => {
        if (!document.hidden && window.htmx) {
            document.querySelectorAll(POLLED).forEach((elt) => window.htmx.trigger(elt, "poll-now"));
        }
    });

    // Elements with an id and data-announce="<what it is>": their text is read out when a
    // poll changes it, e.g. "vdi-acme-3f2a: stopped".
    function announced(root) {
        const texts = new Map();
        root.querySelectorAll("[data-announce][id]").forEach((elt) => {
            texts.set(elt.id, { label: elt.dataset.announce, text: elt.textContent.trim() });
        });
        return texts;
    }

    let before = null;

    document.addEventListener("htmx:beforeSwap", (event) => {
        const { xhr, pathInfo } = event.detail;
        if (xhr.responseURL && pathInfo && pathInfo.requestPath) {
            const asked = new URL(pathInfo.requestPath, window.location.href).pathname;
            const answered = new URL(xhr.responseURL).pathname;
            if (asked !== answered) {          // redirected, e.g. to the login page
                event.detail.shouldSwap = false;
                window.location.assign(xhr.responseURL);
                return;
            }
        }
        before = announced(document);
    });

    document.addEventListener("htmx:responseError", (event) => {
        const status = event.detail.xhr.status;
        if (status === 403 || status === 404) {
            window.location.reload();          // shows the error page; nothing polls there
        }
    });

    document.addEventListener("htmx:afterSettle", () => {
        const announcer = document.getElementById("live-announcer");
        if (!before || !announcer) {
            return;
        }
        const changes = [];
        announced(document).forEach((now, id) => {
            const then = before.get(id);
            if (then && then.text !== now.text) {
                changes.push(`${now.label}: ${now.text}`);
            }
        });
        before = null;
        if (changes.length) {
            announcer.textContent = changes.join(". ") + ".";
        }
    });
})();
