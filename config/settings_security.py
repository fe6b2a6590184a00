"""Login lockout (django-axes) and browser security headers (django-csp): the settings that
config/security.py's backend, handler and middleware follow. config/settings.py imports
them after the platform's own settings, so that they are read in the same order as ever."""

import os
from datetime import timedelta

# Login lockout (django-axes) for the portal, Django admin and auth/token/: after
# VDI_LOGIN_FAILURE_LIMIT failed logins for one username from one address, that pair is
# refused (429) for VDI_LOGIN_COOLOFF_MIN minutes; a successful login clears the count.
# Password spraying (a few tries at many usernames) is caught per address: after
# VDI_LOGIN_FAILURE_LIMIT_PER_ADDRESS failed logins from one address, whatever the
# usernames, every login from there is refused for the cool-off (0: no such limit); a
# successful login there clears only its own username's failures (config/security.py).
AXES_FAILURE_LIMIT = int(os.environ.get("VDI_LOGIN_FAILURE_LIMIT", "5"))
VDI_LOGIN_FAILURE_LIMIT_PER_ADDRESS = int(os.environ.get("VDI_LOGIN_FAILURE_LIMIT_PER_ADDRESS",
                                                         "30"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("VDI_LOGIN_COOLOFF_MIN", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_HANDLER = "config.security.LoginLockoutHandler"  # axes' database handler + the address limit
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "core.context.client_ip"  # honours VDI_THROTTLE_NUM_PROXIES
AXES_LOCKOUT_CALLABLE = "config.security.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False  # its lines name the username and address only; no banner at each start
# Content-Security-Policy (django-csp): nothing but our own files, no inline script or
# style. Two exceptions (config/security.py): the browser console page may also open its
# websocket to the console proxies, and Django admin and Swagger UI, whose templates carry
# an inline <style>, may use inline styles.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/metrics", "/healthz", "/readyz"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],  # noVNC draws its cursor from data: URLs
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
