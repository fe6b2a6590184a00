// The browser console (templates/portal/console.html): noVNC's RFB client on the console
// proxy's websocket. The page carries the one-time token (inside the websocket URL) and the
// VNC password in a JSON block; neither goes into any other URL.
const config = JSON.parse(document.getElementById("console-config").textContent);
const status = document.getElementById("status");
const screen = document.getElementById("screen");
const ctrlAltDel = document.getElementById("ctrl-alt-del");
const fullscreen = document.getElementById("fullscreen");
const dashboard = document.getElementById("dashboard-link");

// The console proxy closes a console itself with a code of the portal's own range and a
// reason to show, e.g. 4001 "Your session ended (Ended by an administrator)".
const PORTAL_CLOSE_CODES = { first: 4000, last: 4099 };

function show(state, text) {
    status.dataset.state = state;
    status.textContent = text;
}

fullscreen.addEventListener("click", () => {
    if (document.fullscreenElement) {
        document.exitFullscreen();
    } else {
        screen.requestFullscreen().catch((error) => show(status.dataset.state,
            `${status.textContent} (full screen refused: ${error.message})`));
    }
});

let rfb = null;
let connected = false;

async function start() {
    const rfbUrl = document.getElementById("console-script").dataset.rfb;
    let RFB;
    try {
        ({ default: RFB } = await import(rfbUrl));
    } catch (error) {
        show("failed", `Could not load the console client (noVNC): ${error.message}`);
        return;
    }
    show("connecting", "Connecting…");
    // Our own websocket, handed to noVNC, so that the close code and reason can be read:
    // this listener runs before noVNC's, which then reports the disconnect.
    let closed = null;
    const socket = new WebSocket(config.url);
    socket.addEventListener("close", (event) => { closed = event; });
    rfb = new RFB(screen, socket, { credentials: { password: config.password } });
    rfb.scaleViewport = true;   // fit the desktop into the window
    rfb.resizeSession = false;
    rfb.background = "#282828";
    rfb.addEventListener("connect", () => {
        connected = true;
        ctrlAltDel.disabled = false;
        show("connected", "Connected");
        rfb.focus();
    });
    rfb.addEventListener("credentialsrequired", () => {
        rfb.sendCredentials({ password: config.password });
    });
    rfb.addEventListener("securityfailure", (event) => {
        const reason = event.detail.reason || `status ${event.detail.status}`;
        show("failed", `The desktop refused the console password (${reason}); ` +
            "the ticket may have expired: reload the page for a new one.");
    });
    rfb.addEventListener("disconnect", (event) => {
        ctrlAltDel.disabled = true;
        if (closed && closed.code >= PORTAL_CLOSE_CODES.first &&
                closed.code <= PORTAL_CLOSE_CODES.last) {
            show("ended", `${closed.reason || "The portal closed this console"}. ` +
                "Connect again from the dashboard.");
            dashboard.hidden = false;
            return;
        }
        if (status.dataset.state === "failed") return;  // keep the security failure's reason
        if (!connected) {
            show("disconnected", "Disconnected: the console proxy refused or could not reach " +
                "the desktop (a console link works once; reload the page for a new one).");
        } else if (event.detail.clean) {
            show("disconnected", "Disconnected.");
        } else {
            show("disconnected", "Disconnected: the connection to the desktop was lost.");
        }
    });
    rfb.addEventListener("desktopname", (event) => {
        document.title = `${event.detail.name} · ${config.title}`;
    });
}

ctrlAltDel.addEventListener("click", () => {
    if (rfb && connected) {
        rfb.sendCtrlAltDel();
        rfb.focus();
    }
});

start();
