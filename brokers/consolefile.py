"""The .vv console file that remote-viewer opens.

remote-viewer reads it with GLib's key file parser: one ``key=value`` per line, ``[group]``
lines, ``#`` comments, and backslash escapes in values (``\\n``, ``\\\\``, ...). Whatever the
names of a pool, an organisation or a host hold, every value here is one line (``value``):
a line break inside a name cannot start a key or a group of its own, and a backslash is
written as GLib's escape for it. The file always has exactly the ``[virt-viewer]`` group.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from django.http import HttpResponse
from django.utils.http import content_disposition_header

from brokers.models import ConnectionTicket
from core.api.renderers import VirtViewerRenderer
from core.naming import single_line

CONTENT_TYPE = VirtViewerRenderer.media_type
# What a download's plain file name keeps of a name (a fallback for old browsers; the name
# as written goes in filename*).
FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9 ()._+-]+")


def value(text: str) -> str:
    """``text`` as one key file value: one line, backslashes escaped."""
    return single_line(str(text)).replace("\\", "\\\\")


def render_vv(*, ticket: ConnectionTicket, password: str, title: str) -> str:
    lines = ["[virt-viewer]", f"type={value(ticket.protocol)}", f"host={value(ticket.host)}"]
    if ticket.port:
        lines.append(f"port={ticket.port}")
    if ticket.tls_port:
        lines.append(f"tls-port={ticket.tls_port}")
        host = ticket.desktop.host if ticket.desktop and ticket.desktop.host_id else None
        subject = value(host.console_tls_subject) if host is not None else ""
        if subject:
            lines.append(f"host-subject={subject}")
        if host is not None and host.console_ca_cert:
            # The PEM on one line: remote-viewer reads the "\n" escape as a line break.
            pem = host.console_ca_cert.strip().splitlines()
            lines.append("ca=" + "\\n".join(value(line) for line in pem))
    lines += [
        f"password={value(password)}",
        "delete-this-file=1",
        f"title={value(title)}",
        "toggle-fullscreen=shift+f11",
        "release-cursor=shift+f12",
        "secure-attention=ctrl+alt+end",
        f"x-expires-at={ticket.expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ]
    if not ticket.password_applied:
        lines.append("x-simulated=1")
    return "\n".join(lines) + "\n"


def attachment_header(name: str) -> str:
    """Content-Disposition for ``<name>.vv``: a plain ASCII file name every browser takes,
    and, for a name that is not plain ASCII, the name as written in ``filename*``
    (RFC 6266)."""
    shown = single_line(name).replace("/", "_").replace("\\", "_")
    plain = unicodedata.normalize("NFKD", shown).encode("ascii", "ignore").decode()
    plain = FILENAME_UNSAFE.sub("_", plain).strip(" ._") or "console"
    header = content_disposition_header(as_attachment=True, filename=f"{plain}.vv")
    if shown and not shown.isascii():
        header += f"; filename*=utf-8''{quote(f'{shown}.vv', safe='')}"
    return header


def vv_response(*, session, ticket: ConnectionTicket, password: str) -> HttpResponse:
    body = render_vv(ticket=ticket, password=password,
                     title=f"{session.pool.name} ({session.tenant.name})")
    response = HttpResponse(body, content_type=CONTENT_TYPE)
    response["Content-Disposition"] = attachment_header(session.pool.name)
    response["Cache-Control"] = "no-store"
    return response
