"""The .vv console file that remote-viewer opens."""

from __future__ import annotations

from django.http import HttpResponse

from brokers.models import ConnectionTicket

CONTENT_TYPE = "application/x-virt-viewer"


def render_vv(*, ticket: ConnectionTicket, password: str, title: str) -> str:
    lines = ["[virt-viewer]", f"type={ticket.protocol}", f"host={ticket.host}"]
    if ticket.port:
        lines.append(f"port={ticket.port}")
    if ticket.tls_port:
        lines.append(f"tls-port={ticket.tls_port}")
        host = ticket.desktop.host if ticket.desktop and ticket.desktop.host_id else None
        if host is not None and host.console_tls_subject:
            lines.append(f"host-subject={host.console_tls_subject}")
        if host is not None and host.console_ca_cert:
            # One line: remote-viewer reads "\n" in the value as a line break.
            lines.append("ca=" + host.console_ca_cert.strip().replace("\n", "\\n"))
    lines += [
        f"password={password}",
        "delete-this-file=1",
        f"title={title}",
        "toggle-fullscreen=shift+f11",
        "release-cursor=shift+f12",
        "secure-attention=ctrl+alt+end",
        f"x-expires-at={ticket.expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ]
    if not ticket.password_applied:
        lines.append("x-simulated=1")
    return "\n".join(lines) + "\n"


def vv_response(*, session, ticket: ConnectionTicket, password: str) -> HttpResponse:
    body = render_vv(ticket=ticket, password=password,
                     title=f"{session.pool.name} ({session.tenant.name})")
    response = HttpResponse(body, content_type=CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{session.pool.name}.vv"'
    response["Cache-Control"] = "no-store"
    return response
