"""Settings, read from the environment.

VDI_ENV selects the profile: ``production`` (default: every secret must be given),
``demo`` (the README's run command) or ``test`` (the test suite).
"""

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VDI_ENV = os.environ.get("VDI_ENV", "production")
if VDI_ENV not in {"production", "demo", "test"}:
    raise ImproperlyConfigured(f"VDI_ENV must be production, demo or test, not {VDI_ENV!r}")
DEVELOPMENT = VDI_ENV in {"demo", "test"}

DATA_DIR = Path(os.environ.get("VDI_DATA_DIR", BASE_DIR / "var"))
DATA_DIR.mkdir(parents=True, exist_ok=True)

# Prometheus multiprocess mode (config/metrics.py): the web and worker processes of one machine
# write their metrics into one folder, which /metrics adds up. prometheus_client reads the
# variable when it is first imported, after the settings.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(DATA_DIR / "prometheus"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEVELOPMENT:
        raise ImproperlyConfigured("SECRET_KEY must be set (VDI_ENV=production)")
    SECRET_KEY = "insecure-development-key-" + VDI_ENV

DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver" if DEVELOPMENT else ""
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "axes",
    "csp",
    "core",
    "tenants",
    "hypervisors",
    "vdi",
    "brokers",
    "config",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "core.context.RequestContextMiddleware",  # request id, source and address (audit, logs)
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tenants.middleware.TenantScopeMiddleware",
    "axes.middleware.AxesMiddleware",  # turns a login lockout into its 429 answer
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.context_processors.tenancy",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'vdi.sqlite3'}"),
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock when a transaction starts, so quota checks and spare
    # claims are serialised on SQLite as SELECT ... FOR UPDATE serialises them on PostgreSQL.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so a real worker process can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "config.security.LoginLockoutBackend",  # refuses locked-out logins (django-axes)
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "portal-home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# noVNC for the browser console, from the npm package pinned in package.json (scripts/setup
# runs `npm ci`): its ES modules are served as /static/novnc/{core,vendor}/…, never from a CDN.
NOVNC_DIR = BASE_DIR / "node_modules" / "@novnc" / "novnc"
STATICFILES_DIRS += [("novnc/core", NOVNC_DIR / "core"), ("novnc/vendor", NOVNC_DIR / "vendor")]
# htmx for the portal's live parts, from the same npm packages: /static/htmx/htmx.min.js.
STATICFILES_DIRS += [("htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist")]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEVELOPMENT
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEVELOPMENT
    else "django.core.mail.backends.smtp.EmailBackend",
)

# --- REST API -------------------------------------------------------------------------------
def _throttle_rate(name: str, default: str) -> str | None:
    """A rate such as ``600/min`` (per s, min, hour or day); empty turns the throttle off.
    The test profile has them off unless set: its clients all come from one address."""
    rate = os.environ.get(name, "" if VDI_ENV == "test" else default).strip()
    if rate and not re.fullmatch(r"\d+/(s|sec|m|min|h|hour|d|day)", rate):
        raise ImproperlyConfigured(f"{name} must look like 600/min, not {rate!r}")
    return rate or None


VDI_THROTTLE_RATES = {
    "user": _throttle_rate("VDI_THROTTLE_USER", "600/min"),
    "anon": _throttle_rate("VDI_THROTTLE_ANON", "60/min"),
    "login": _throttle_rate("VDI_THROTTLE_LOGIN", "10/min"),
    "tenant": _throttle_rate("VDI_THROTTLE_TENANT", "3000/min"),
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.api.authentication.TokenAuthentication",  # knox's, noting each token's use
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "core.api.filters.ListPagination",  # LimitOffset, max 500
    "PAGE_SIZE": 50,
    # Each list's FilterSet is in its app's api/filters.py; ``?ordering=`` takes the view's
    # ordering_fields. Both answer 400 to a value they can't use.
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "core.api.filters.OrderingFilter",
    ],
    # core/api/throttling.py; tenant-scoped routes also share a per-tenant budget.
    "DEFAULT_THROTTLE_CLASSES": [
        "core.api.throttling.UserRateThrottle",
        "core.api.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": VDI_THROTTLE_RATES,
    # Client addresses (anon and login throttles): with 0, the connection's address; behind
    # N reverse proxies that each append to X-Forwarded-For, set N so the client's own
    # address is used (a client-supplied header is never trusted beyond that).
    "NUM_PROXIES": int(os.environ.get("VDI_THROTTLE_NUM_PROXIES", "0")),
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exceptions.exception_handler",
}
# knox's own token model (not swapped); named here because tenants.ApiToken points at it.
KNOX_TOKEN_MODEL = "knox.AuthToken"
REST_KNOX = {
    # API tokens are stored hashed and expire (default 10 h; API_TOKEN_TTL_H=0 for never).
    "TOKEN_TTL": timedelta(hours=float(os.environ.get("API_TOKEN_TTL_H", "10"))) or None,
    "AUTH_HEADER_PREFIX": "Token",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "VDI portal API",
    "DESCRIPTION": "Multi-tenant virtual desktops on KVM: pools, desktops, sessions and console tickets.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "DEFAULT_GENERATOR_CLASS": "config.schema.ScopeFreeSchemaGenerator",
    # Swagger UI is served from our own static files, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.schema.add_error_responses",
    ],
}

# --- Celery ---------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    # While Redis is away a request waiting on a result gives up after ~3 s (the client is
    # told to retry), not after Celery's default of 20 reconnects a second apart.
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"retry_policy": {"max_retries": 3}}
else:
    # Embedded default: a broker made of files, so the demo needs no server at all.
    _queue_dir = DATA_DIR / "celery" / "queue"
    _results_dir = DATA_DIR / "celery" / "results"
    _control_dir = DATA_DIR / "celery" / "control"
    for _d in (_queue_dir, _results_dir, _control_dir):
        _d.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "control_folder": str(_control_dir),
        "polling_interval": 0.1,
    }
    CELERY_RESULT_BACKEND = f"file://{_results_dir}"
# The cache holds API throttling history. Redis, when given, is shared by every web process;
# without it each process keeps its own local-memory history (fine for the demo, while with
# N processes a client could get up to N times its rate).
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "vdi",
        }
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_DEFAULT_QUEUE = "vdi"
# Console passwords (set and revoked) have a queue of their own: never behind provisioning.
CELERY_TASK_ROUTES = {
    "brokers.ticket_apply": {"queue": "console"},
    "brokers.console_revoke": {"queue": "console"},
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Workers keep their database connections between tasks as web processes do between requests
# (CONN_MAX_AGE, health checks; config/celery.py), instead of Celery's reconnect per task.
CELERY_DB_REUSE_MAX = 1_000_000
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
_REAP_INTERVAL_S = float(os.environ.get("VDI_OPERATIONS_REAP_INTERVAL_S", "60"))
CELERY_BEAT_SCHEDULE = {
    "pools-autoscale": {
        "task": "vdi.pools_autoscale",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    "hosts-check": {
        "task": "hypervisors.hosts_check",
        "schedule": float(os.environ.get("VDI_HOST_CHECK_INTERVAL_S", "60")),
        "options": {"expires": 55},
    },
    "operations-reap": {
        "task": "vdi.operations_reap",
        "schedule": _REAP_INTERVAL_S,
        "options": {"expires": 0.9 * _REAP_INTERVAL_S},
    },
    "sessions-expire": {
        "task": "brokers.sessions_expire",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    "usage-aggregate": {
        "task": "tenants.usage_aggregate",
        "schedule": 600.0,
        "options": {"expires": 550},
    },
    "idempotency-keys-expire": {
        "task": "core.idempotency_keys_expire",
        "schedule": 3600.0,
        "options": {"expires": 3000},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- product settings -----------------------------------------------------------------------
from core.limits import TICKET_TTL_MAX_S, TICKET_TTL_MIN_S  # noqa: E402 (plain constants)


def env_int_between(name: str, default: int, low: int, high: int) -> int:
    """An integer setting that must lie in [low, high]: anything else stops the start-up."""
    raw = os.environ.get(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ImproperlyConfigured(f"{name} must be between {low} and {high}, not {value}")
    return value


VDI = {
    # Lifetime of a console password set on a live domain (a pool may set its own, within
    # the same bounds).
    "TICKET_TTL_S": env_int_between("VDI_TICKET_TTL_S", 120, TICKET_TTL_MIN_S, TICKET_TTL_MAX_S),
    # The most desktops one pool may have, so that one tenant's pool cannot take every host.
    "POOL_MAX_DESKTOPS": env_int_between("VDI_POOL_MAX_DESKTOPS", 100, 1, 100_000),
    # How long a connect request waits for a worker to set the ticket before answering 202.
    "TICKET_WAIT_S": float(os.environ.get("VDI_TICKET_WAIT_S", "10")),
    # What a pending connect tells the client to wait before polling again.
    "RETRY_AFTER_S": int(os.environ.get("VDI_RETRY_AFTER_S", "3")),
    # An operation still running past this deadline is reaped.
    "OPERATION_DEADLINE_S": int(os.environ.get("VDI_OPERATION_DEADLINE_S", "600")),
    # Seconds a libvirt call may take before it is abandoned.
    "LIBVIRT_CALL_TIMEOUT_S": float(os.environ.get("VDI_LIBVIRT_CALL_TIMEOUT_S", "30")),
    # A host that fails this many checks in a row is marked down, its desktops unknown.
    "HOST_DOWN_AFTER_FAILURES": int(os.environ.get("VDI_HOST_DOWN_AFTER_FAILURES", "3")),
    # A lab's hosts only: host URIs may say qemu+ssh://…?no_verify=1 (the lab's own sshd on
    # loopback has a throwaway host key). Never on for real hosts.
    "HOST_URI_ALLOW_NO_VERIFY": env_bool("VDI_HOST_URI_ALLOW_NO_VERIFY"),
    # Tenant networks on "tenant" hosts (docs/hosts.md): tenant N's isolated networks get
    # the Nth subnet of this size from this range (its address .1 is the host's, with DHCP).
    "TENANT_NETWORK_RANGE": os.environ.get("VDI_TENANT_NETWORK_RANGE", "10.128.0.0/9"),
    "TENANT_NETWORK_PREFIX": env_int_between("VDI_TENANT_NETWORK_PREFIX", 24, 8, 29),
    # Tenant N's libvirt networks (and their bridges) are named <this>N.
    "TENANT_NETWORK_NAME": os.environ.get("VDI_TENANT_NETWORK_NAME", "vdi-t"),
    # Placement: "spread" puts a desktop on the least committed host, "pack" on the most
    # committed one that still has room (fewer hosts busy).
    "PLACEMENT": os.environ.get("VDI_PLACEMENT", "spread"),
    # How long a graceful shutdown may take before the desktop is powered off.
    "SHUTDOWN_GRACE_S": float(os.environ.get("VDI_SHUTDOWN_GRACE_S", "60")),
    # How long an Idempotency-Key is remembered.
    "IDEMPOTENCY_TTL_H": int(os.environ.get("VDI_IDEMPOTENCY_TTL_H", "24")),
    # How soon an operation waiting for a boot slot on its host looks again.
    "BOOT_SLOT_RETRY_S": float(os.environ.get("VDI_BOOT_SLOT_RETRY_S", "2")),
    # How often the portal's live parts (desktop states, pool spares, a pending Connect) ask
    # for news while something is changing; five times slower once all is settled.
    "PORTAL_POLL_S": float(os.environ.get("VDI_PORTAL_POLL_S", "2")),
}


# --- organisations: default quotas and invitations (tenants/services.py) --------------------
def _default_quota(name: str, production: int) -> int | None:
    """A new organisation's quota when its creator gives none: a whole number, or empty for
    unlimited. Unset: ``production`` in production, unlimited in demo and test."""
    raw = os.environ.get(name, "" if DEVELOPMENT else str(production)).strip()
    if raw and not raw.isdigit():
        raise ImproperlyConfigured(f"{name} must be a whole number or empty, not {raw!r}")
    return int(raw) if raw else None


VDI.update({
    "DEFAULT_TENANT_QUOTAS": {
        "max_desktops": _default_quota("VDI_DEFAULT_TENANT_MAX_DESKTOPS", 50),
        "max_vcpus": _default_quota("VDI_DEFAULT_TENANT_MAX_VCPUS", 100),
        "max_memory_mb": _default_quota("VDI_DEFAULT_TENANT_MAX_MEMORY_MB", 204800),
        "max_sessions": _default_quota("VDI_DEFAULT_TENANT_MAX_SESSIONS", 50),
    },
    # How long an invitation to an organisation (and its e-mailed link) stays valid.
    "INVITATION_TTL_H": int(os.environ.get("VDI_INVITATION_TTL_H", "72")),
})
if VDI["INVITATION_TTL_H"] < 1:
    raise ImproperlyConfigured("VDI_INVITATION_TTL_H must be at least 1")
# The invitations' states, as the organisation and the person invited see them, under one
# name in the API schema.
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {})[
    "InvitationStateEnum"] = "tenants.models.INVITATION_STATES"

# --- browser console proxy (manage.py console_proxy; docs/connecting.md) ---------------------
def _console_origins() -> list[str]:
    """Origins whose pages may open console websockets: VDI_CONSOLE_ALLOWED_ORIGINS, else
    CSRF_TRUSTED_ORIGINS plus https://HOST for each plain ALLOWED_HOSTS entry; in demo and
    test also http(s)://HOST on any port (``:*``), the port being the dev server's."""
    if os.environ.get("VDI_CONSOLE_ALLOWED_ORIGINS", "").strip():
        return env_list("VDI_CONSOLE_ALLOWED_ORIGINS")
    origins = list(CSRF_TRUSTED_ORIGINS)
    for host in ALLOWED_HOSTS:
        if host in {"*", "testserver"} or host.startswith((".", "*")):
            continue
        origins += [f"http://{host}:*", f"https://{host}:*"] if DEVELOPMENT else [f"https://{host}"]
    return origins


def _console_proxy_tls() -> tuple[str, str]:
    """The PEM certificate chain and private key the console proxy serves wss:// with, or
    two empty strings (ws://). Both or neither; the files are read when the proxy starts
    (the portal only needs to know that it serves TLS, not the key)."""
    cert = os.environ.get("VDI_CONSOLE_PROXY_TLS_CERT", "").strip()
    key = os.environ.get("VDI_CONSOLE_PROXY_TLS_KEY", "").strip()
    if bool(cert) != bool(key):
        raise ImproperlyConfigured(
            "VDI_CONSOLE_PROXY_TLS_CERT and VDI_CONSOLE_PROXY_TLS_KEY go together: set both "
            f"(PEM file paths) to serve wss://, or neither; only "
            f"{'VDI_CONSOLE_PROXY_TLS_CERT' if cert else 'VDI_CONSOLE_PROXY_TLS_KEY'} is set")
    return cert, key


_console_tls_cert, _console_tls_key = _console_proxy_tls()
VDI.update({
    # Where `manage.py console_proxy` listens (HOST:PORT; --listen overrides it).
    "CONSOLE_PROXY_LISTEN": os.environ.get("VDI_CONSOLE_PROXY_LISTEN", "127.0.0.1:6080"),
    # The websocket URL browsers use to reach the proxies (e.g. wss://console.example.com/);
    # empty: ws(s)://<the portal's host name>:<the listen port>/, wss:// when the proxy
    # serves TLS itself (below) or the page is https.
    "CONSOLE_PROXY_URL": os.environ.get("VDI_CONSOLE_PROXY_URL", ""),
    # The proxy serves wss:// itself with this certificate chain and key (PEM file paths;
    # --tls-cert/--tls-key override them); empty: ws://, TLS ending at a load balancer.
    "CONSOLE_PROXY_TLS_CERT": _console_tls_cert,
    "CONSOLE_PROXY_TLS_KEY": _console_tls_key,
    "CONSOLE_ALLOWED_ORIGINS": _console_origins(),
    # Behind a load balancer: take the browser's address from the last X-Forwarded-For hop.
    "CONSOLE_PROXY_TRUST_FORWARDED_FOR": env_bool("VDI_CONSOLE_PROXY_TRUST_FORWARDED_FOR"),
    # How often each open browser console asks whether its session is still live; an
    # ended session's console is closed within about this long.
    "CONSOLE_PROXY_RECHECK_S": float(os.environ.get("VDI_CONSOLE_PROXY_RECHECK_S", "2")),
    # Abuse limits, per proxy process (0: none): open connections from one client address
    # and in all, and how long a connection may take to finish its websocket handshake.
    "CONSOLE_PROXY_MAX_PER_ADDRESS": env_int_between("VDI_CONSOLE_PROXY_MAX_PER_ADDRESS", 10,
                                                     0, 100_000),
    "CONSOLE_PROXY_MAX_CONNECTIONS": env_int_between("VDI_CONSOLE_PROXY_MAX_CONNECTIONS", 500,
                                                     0, 100_000),
    "CONSOLE_PROXY_HANDSHAKE_TIMEOUT_S": float(
        os.environ.get("VDI_CONSOLE_PROXY_HANDSHAKE_TIMEOUT_S", "10")),
})
if not VDI["CONSOLE_PROXY_RECHECK_S"] > 0:
    raise ImproperlyConfigured("VDI_CONSOLE_PROXY_RECHECK_S must be a positive number of "
                               f"seconds, not {VDI['CONSOLE_PROXY_RECHECK_S']}")
try:
    _tenant_range = ipaddress.IPv4Network(VDI["TENANT_NETWORK_RANGE"])
except ValueError as _error:
    raise ImproperlyConfigured(f"VDI_TENANT_NETWORK_RANGE: {_error}") from None
if not _tenant_range.is_private or _tenant_range.prefixlen > VDI["TENANT_NETWORK_PREFIX"]:
    raise ImproperlyConfigured(
        f"VDI_TENANT_NETWORK_RANGE {_tenant_range} must be a private IPv4 range of at least one "
        f"/{VDI['TENANT_NETWORK_PREFIX']} (VDI_TENANT_NETWORK_PREFIX)")
if not re.fullmatch(r"[a-z][a-z0-9-]{0,9}", VDI["TENANT_NETWORK_NAME"]):
    raise ImproperlyConfigured(
        "VDI_TENANT_NETWORK_NAME must be 1-10 lower-case letters, digits or dashes, starting "
        f"with a letter (bridge names are at most 15 characters), not {VDI['TENANT_NETWORK_NAME']!r}")
if VDI["PLACEMENT"] not in {"spread", "pack"}:
    raise ImproperlyConfigured(f"VDI_PLACEMENT must be spread or pack, not {VDI['PLACEMENT']!r}")

# --- metrics, login throttling, browser security headers ------------------------------------
VDI.update({
    # Who may read /metrics (config/metrics.py): these addresses or networks, or a request
    # with "Authorization: Bearer <VDI_METRICS_TOKEN>" (empty: no token is accepted).
    "METRICS_ALLOWED_IPS": env_list("VDI_METRICS_ALLOWED_IPS", "127.0.0.1,::1"),
    "METRICS_TOKEN": os.environ.get("VDI_METRICS_TOKEN", ""),
})
for _network in VDI["METRICS_ALLOWED_IPS"]:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"VDI_METRICS_ALLOWED_IPS: {_network!r} is not an address "
                                   "or network") from None
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

# One JSON object per line in production (core/logformat.py), for log shippers; plain lines
# in the demo and tests unless LOG_FORMAT says otherwise. Celery workers follow (config/celery.py).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain" if DEVELOPMENT else "json")
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "core.logformat.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if not DEVELOPMENT:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Probes and scrapers inside the network speak plain HTTP to the process itself.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
