"""The floor of a Connect: what handing out a ready spare cannot do without, as a WSGI app
with no framework, served by gunicorn gthread with the product's workers and threads.

``POST /floor/pools/<pool id>/connect/`` with ``Authorization: Token <key>``:

1. the token: one indexed lookup in knox's table by the key's prefix, the digest compared as
   knox does (and the token's expiry and its user's ``is_active`` checked in the same query);
2. in the same transaction: claim a spare (``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED
   LIMIT 1) RETURNING``), insert the session and its ticket row, commit;
3. the console password: the calls the product's driver makes on the desktop's host
   (``lookupByName``, ``XMLDesc``, ``updateDeviceFlags``) through libvirtd, over one cached
   connection per host per process. The test driver refuses the update; that refusal is the
   expected, simulated outcome, as it is for the product.

Nothing else: no tenant lock, membership or quota check, throttle, audit, usage journal or
Celery round trip. ``GET /floor/healthz`` opens the thread's database connection (a served
site is warm). The INSERT statements and the hosts' URIs come from the JSON file named by
``FLOOR_STATEMENTS`` (written by bench/login_storm.py from the product's models), the
database from ``FLOOR_DSN``.

    gunicorn bench.floor_server:app --worker-class gthread --workers 2 --threads 8
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import libvirt
import psycopg2

STATEMENTS = json.loads(open(os.environ["FLOOR_STATEMENTS"]).read())
HOST_URIS: dict[str, str] = STATEMENTS["host_uris"]
TOKEN_KEY_LENGTH = STATEMENTS["token_key_length"]
TICKET_TTL = timedelta(seconds=STATEMENTS["ticket_ttl_s"])
CONNECT = re.compile(r"^/floor/pools/([0-9a-f-]{36})/connect/$")

TOKEN_SQL = (
    "SELECT t.digest, t.user_id FROM knox_authtoken t JOIN auth_user u ON u.id = t.user_id "
    "WHERE t.token_key = %s AND (t.expiry IS NULL OR t.expiry > now()) AND u.is_active")
CLAIM_SQL = (
    "UPDATE vdi_desktop SET assigned_user_id = %(user_id)s WHERE id = ("
    "SELECT id FROM vdi_desktop WHERE pool_id = %(pool_id)s AND state = 'running' "
    "AND assigned_user_id IS NULL AND NOT needs_reset ORDER BY created_at LIMIT 1 "
    "FOR UPDATE SKIP LOCKED) RETURNING id, tenant_id, name, host_id, spice_port")

_local = threading.local()
_libvirt: dict[str, libvirt.virConnect] = {}
_libvirt_lock = threading.Lock()

# The test driver's refusal is reported through libvirt's error handler too: keep it quiet.
libvirt.registerErrorHandler(lambda _ctx, _error: None, None)


def _database():
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg2.connect(os.environ["FLOOR_DSN"])
    return conn


def _host(uri: str) -> libvirt.virConnect:
    with _libvirt_lock:
        conn = _libvirt.get(uri)
        if conn is None:
            conn = _libvirt[uri] = libvirt.open(uri)
        return conn


def _user_of(cursor, token: str) -> int | None:
    """knox's check: the rows with the token's key prefix, the digest compared in constant
    time."""
    digest = hashlib.sha512(token.encode()).hexdigest()
    cursor.execute(TOKEN_SQL, [token[:TOKEN_KEY_LENGTH]])
    for stored, user_id in cursor.fetchall():
        if hmac.compare_digest(stored, digest):
            return user_id
    return None


def _password_set(uri: str, name: str, password: str, valid_until: datetime) -> bool:
    """The product driver's calls for a SPICE ticket; False when the host refuses them (the
    test driver cannot set console passwords)."""
    dom = _host(uri).lookupByName(name)
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
    graphics = root.find("./devices/graphics[@type='spice']")
    graphics.set("passwd", password)
    graphics.set("passwdValidTo", valid_until.strftime("%Y-%m-%dT%H:%M:%S"))
    graphics.set("connected", "disconnect")
    graphics.set("autoport", "yes")
    try:
        dom.updateDeviceFlags(ET.tostring(graphics, encoding="unicode"),
                              libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as error:
        if error.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT,
                                      libvirt.VIR_ERR_OPERATION_UNSUPPORTED):
            return False
        raise
    return True


def connect(pool_id: str, token: str) -> tuple[str, dict]:
    conn = _database()
    with conn.cursor() as cursor:
        user_id = _user_of(cursor, token)
        if user_id is None:
            conn.rollback()
            return "401 Unauthorized", {"detail": "Invalid token."}
        cursor.execute(CLAIM_SQL, {"user_id": user_id, "pool_id": pool_id})
        row = cursor.fetchone()
        if row is None:
            conn.rollback()
            return "409 Conflict", {"code": "pool_exhausted"}
        desktop_id, tenant_id, name, host_id, port = row
        session_id, ticket_id = str(uuid.uuid4()), str(uuid.uuid4())
        expires_at = datetime.now(timezone.utc) + TICKET_TTL
        cursor.execute(STATEMENTS["session"], {
            "id": session_id, "tenant_id": tenant_id, "pool_id": pool_id,
            "desktop_id": desktop_id, "user_id": user_id})
        cursor.execute(STATEMENTS["ticket"], {
            "id": ticket_id, "tenant_id": tenant_id, "session_id": session_id,
            "desktop_id": desktop_id, "port": port, "issued_by_id": user_id,
            "expires_at": expires_at})
        conn.commit()
    password = secrets.token_urlsafe(32)
    applied = _password_set(HOST_URIS[str(host_id)], name, password, expires_at)
    return "200 OK", {"session": session_id, "desktop": str(desktop_id), "ticket": ticket_id,
                      "password": password, "password_applied": applied}


def app(environ, start_response):
    path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
    match = CONNECT.match(path)
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:
        if method == "POST" and match and auth.startswith("Token "):
            status, body = connect(match.group(1), auth[len("Token "):])
        elif method == "GET" and path == "/floor/healthz":
            with _database().cursor() as cursor:
                cursor.execute("SELECT 1")
            _database().commit()
            status, body = "200 OK", {"status": "ok"}
        else:
            status, body = "404 Not Found", {"detail": "Not found."}
    except (psycopg2.Error, libvirt.libvirtError) as error:
        conn = getattr(_local, "conn", None)
        if conn is not None and not conn.closed:
            conn.rollback()
        status, body = "500 Internal Server Error", {"detail": str(error)[:200]}
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))])
    return [data]
