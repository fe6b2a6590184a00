"""Settings, read from the environment.

VDI_ENV selects the profile: ``production`` (default: every secret must be given),
``demo`` (the README's run command) or ``test`` (the test suite).
"""

import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_list
from config.settings_logging import log_format, logging_config
from config.settings_vdi import console_proxy_tls, default_quota, vdi_settings
from core.limits import TICKET_TTL_MAX_S, TICKET_TTL_MIN_S  # noqa: F401 (settings names too)

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

# --- the platform's own settings, settings.VDI (config/settings_vdi.py) ----------------------
VDI = vdi_settings(development=DEVELOPMENT, allowed_hosts=ALLOWED_HOSTS,
                   csrf_trusted_origins=CSRF_TRUSTED_ORIGINS)
# The invitations' states, as the organisation and the person invited see them, under one
# name in the API schema.
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {})[
    "InvitationStateEnum"] = "tenants.models.INVITATION_STATES"
# Under the names they had when they were written here (the tests call them).
_console_proxy_tls = console_proxy_tls


def _default_quota(name: str, production: int) -> int | None:
    """A new organisation's quota when its creator gives none, under this profile."""
    return default_quota(name, production, DEVELOPMENT)


# --- login throttling, browser security headers (config/settings_security.py) ---------------
from config.settings_security import (  # noqa: E402,F401 (settings names, read after VDI)
    AXES_CLIENT_IP_CALLABLE,
    AXES_COOLOFF_TIME,
    AXES_FAILURE_LIMIT,
    AXES_HANDLER,
    AXES_HTTP_RESPONSE_CODE,
    AXES_LOCKOUT_CALLABLE,
    AXES_LOCKOUT_PARAMETERS,
    AXES_RESET_ON_SUCCESS,
    AXES_VERBOSE,
    CONTENT_SECURITY_POLICY,
    SECURE_CONTENT_TYPE_NOSNIFF,
    SECURE_CROSS_ORIGIN_OPENER_POLICY,
    SECURE_REFERRER_POLICY,
    VDI_LOGIN_FAILURE_LIMIT_PER_ADDRESS,
    X_FRAME_OPTIONS,
)

# One JSON object per line in production, for log shippers; plain lines in the demo and tests
# unless LOG_FORMAT says otherwise (config/settings_logging.py). Celery workers follow
# (config/celery.py).
LOG_FORMAT = log_format(DEVELOPMENT)
LOGGING = logging_config(LOG_FORMAT)

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
