"""Settings for the Radical Edge bridge: one file, driven by the environment.

Nothing set: the embedded default (SQLite in WAL mode under ``var/``, the in-memory
channel layer, a local-memory cache), good for one process on one machine.
``DATABASE_URL`` switches to PostgreSQL and ``REDIS_URL`` to channels-redis plus a Redis
cache, which is what running several bridge processes needs. See docs/OPERATIONS.md.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from bridge_app.conf import from_environment
from bridge_app.messages import INBOX_PREFIX
from radical_edge_site.env import env_bool, env_float, env_int, env_list

BASE_DIR = Path(__file__).resolve().parent.parent




DEBUG = env_bool("DJANGO_DEBUG", False)
VAR_DIR = Path(os.environ.get("RADICAL_EDGE_VAR_DIR", BASE_DIR / "var"))
DATABASE_URL = os.environ.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL", "")


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY", "")
    if key:
        return key
    key_file = os.environ.get("DJANGO_SECRET_KEY_FILE", "")
    if key_file:
        return Path(key_file).read_text().strip()
    if DATABASE_URL or REDIS_URL:
        # Several processes must share one key: never invent one per process.
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set when DATABASE_URL or REDIS_URL is"
        )
    # Embedded default: a random key kept beside the SQLite database.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(64))
    return path.read_text().strip()


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
CSRF_FAILURE_VIEW = "bridge_app.api.errors.csrf_failure"  # JSON for programs, the page for people

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "corsheaders",
    "csp",
    "axes",
    "bridge_app",
    "portal_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns lockouts into portal_app.lockout's answer
]

ROOT_URLCONF = "radical_edge_site.urls"
ASGI_APPLICATION = "radical_edge_site.asgi.application"

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
            ],
        },
    },
]

# --- database ---------------------------------------------------------------------------

if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
                                                  conn_health_checks=True)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(VAR_DIR / "db.sqlite3")),
            # A SQLite connection is a file handle: keep it rather than reopen per query.
            "CONN_MAX_AGE": None,
            "OPTIONS": {
                # WAL lets readers run beside the writer; IMMEDIATE avoids upgrade deadlocks.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
                "transaction_mode": "IMMEDIATE",
            },
            # Tests get a file, not Django's shared-cache in-memory database: background
            # writers (events, audit, heartbeats) run in other threads, and shared-cache
            # table locks fail at once ("table is locked") where file locks wait.
            "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"radical-edge-test-{os.getpid()}.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channel layer and cache --------------------------------------------------------------

CHANNEL_CAPACITY = env_int("RADICAL_CHANNEL_CAPACITY", 1000)
REDIS_CORE_READ_TIMEOUT = 15  # seconds; more than the core layer's 5 s blocking pop
if REDIS_URL:
    if os.environ.get("RADICAL_CHANNEL_LAYER", "pubsub") == "core":
        from bridge_app.core.layers_redis import PROCESS_CHANNELS

        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "bridge_app.core.layers_redis.RedisCoreChannelLayer",
                "CONFIG": {
                    # The core layer receives with a blocking pop that waits up to 5 s
                    # (RedisChannelLayer.brpop_timeout). redis-py 8 reads with a 5 s socket
                    # timeout by default: the two raced, and a message popped just as the
                    # read timed out was lost. Reads must outlast the pop.
                    "hosts": [{"address": REDIS_URL, "socket_timeout": REDIS_CORE_READ_TIMEOUT}],
                    "capacity": CHANNEL_CAPACITY,
                    # A process's channels (reply inbox, edges, streams) share one Redis
                    # list (bridge_app/core/layers_redis.py), so they share its capacity.
                    "channel_capacity": {f"{PROCESS_CHANNELS}*": 20 * CHANNEL_CAPACITY},
                    "expiry": 60,
                    "group_expiry": 86400,
                    "prefix": "radical_edge:",
                },
            }
        }
    else:
        # "batched": publishes batched (bridge_app/core/layers_redis.py), faster under load but
        # not the default: a cross-process event test lost live events under load in CI with
        # it (and hiredis) in place, not yet understood (docs/BENCHMARKS.md).
        batched = os.environ.get("RADICAL_CHANNEL_LAYER", "pubsub") == "batched"
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": ("bridge_app.core.layers_redis.RedisPubSubChannelLayer" if batched
                            else "channels_redis.pubsub.RedisPubSubChannelLayer"),
                "CONFIG": {"hosts": [REDIS_URL], "prefix": "radical_edge."},
            }
        }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "radical_edge",
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "bridge_app.core.layers.InMemoryChannelLayer",
            "CONFIG": {
                "capacity": CHANNEL_CAPACITY,
                "channel_capacity": {f"{INBOX_PREFIX}*": 20 * CHANNEL_CAPACITY},
                "expiry": 60,
            },
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# --- auth ---------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "bridge_app.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "bridge_app.api.permissions.TokenScope",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "bridge_app.api.errors.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "bridge_app.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # REST resources (not the proxy, which has its own limits: RADICAL_EDGE USER_RATE …).
    # The counters live in the cache: per process, or shared in Redis with REDIS_URL.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    # Anonymous clients are told apart by REMOTE_ADDR, which the ASGI server sets from
    # X-Forwarded-For only for trusted proxies; DRF's default would read the raw header,
    # which any client can vary to escape the anonymous rate.
    "NUM_PROXIES": 0,
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("RADICAL_API_ANON_RATE", "60/min"),
        "user": os.environ.get("RADICAL_API_USER_RATE", "1200/min"),
    },
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "Radical Edge bridge API",
    "DESCRIPTION": "REST access to HPC edges: edge resources and the plugin proxy `/{edge}/{plugin}/{route}`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "bridge_app.api.proxy_views.openapi_add_proxy_paths",
    ],
}

# --- Radical Edge knobs (read through bridge_app.conf) -------------------------------------

# Every knob and its default is in bridge_app/conf.py (DEFAULTS), which also says which
# environment variable sets it (RADICAL_<NAME>); a bad value stops the bridge here, named.
RADICAL_EDGE = from_environment()

# --- e-mail (notifications; Django's backends, SMTP by default) ---------------------------

EMAIL_BACKEND = os.environ.get("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "radical-edge@localhost")

# --- security -----------------------------------------------------------------------------

# Behind a TLS-terminating proxy, set RADICAL_BEHIND_TLS_PROXY=1 and DJANGO_SECURE=1; see
# docs/OPERATIONS.md. X-Forwarded-Proto and -For are applied by the ASGI server (uvicorn's
# proxy headers), and only from RADICAL_FORWARDED_ALLOW_IPS; Django's SECURE_PROXY_SSL_HEADER
# is deliberately not set, since it would believe X-Forwarded-Proto from any peer.
SECURE = env_bool("DJANGO_SECURE", False)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE and env_bool("DJANGO_SSL_REDIRECT", True)
# Probes and Prometheus reach each process directly over plain HTTP on the host.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000) if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE and env_bool("DJANGO_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Preloading HSTS commits the whole domain to HTTPS for browsers everywhere: a decision for
# the site (DJANGO_HSTS_PRELOAD=1), not a default, so its deploy check is silenced.
if not SECURE_HSTS_PRELOAD:
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("DJANGO_SESSION_COOKIE_AGE", 12 * 3600)
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Content Security Policy (django-csp) for the portal and admin: nothing inline, nothing
# from elsewhere. Proxied plugin answers carry their own, stricter policy (sandboxed).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

# CORS is closed unless origins are listed (e.g. a separately hosted web app).
CORS_ALLOWED_ORIGINS = env_list("RADICAL_CORS_ALLOWED_ORIGINS")
CORS_ALLOW_CREDENTIALS = False

# --- single sign-on (OpenID Connect, optional; docs/OPERATIONS.md "Single sign-on") -------

OIDC_ENABLED = env_bool("RADICAL_OIDC_ENABLED", False)
# Password log-ins are throttled per account and per client address (portal_app/lockout.py).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("RADICAL_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("RADICAL_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "portal_app.lockout.client_ip"
AXES_LOCKOUT_CALLABLE = "portal_app.lockout.lockout_response"
AXES_VERBOSE = False
if OIDC_ENABLED:
    INSTALLED_APPS.append("mozilla_django_oidc")
    AUTHENTICATION_BACKENDS.insert(1, "portal_app.oidc.SiteOIDCBackend")
    try:
        OIDC_RP_CLIENT_ID = os.environ["OIDC_RP_CLIENT_ID"]
        OIDC_OP_AUTHORIZATION_ENDPOINT = os.environ["OIDC_OP_AUTHORIZATION_ENDPOINT"]
        OIDC_OP_TOKEN_ENDPOINT = os.environ["OIDC_OP_TOKEN_ENDPOINT"]
        OIDC_OP_USER_ENDPOINT = os.environ["OIDC_OP_USER_ENDPOINT"]
    except KeyError as missing:
        raise ImproperlyConfigured(f"RADICAL_OIDC_ENABLED=1 needs {missing.args[0]} (docs/OPERATIONS.md)") from None
    OIDC_RP_CLIENT_SECRET = os.environ.get("OIDC_RP_CLIENT_SECRET", "")
    OIDC_RP_SIGN_ALGO = os.environ.get("OIDC_RP_SIGN_ALGO", "RS256")
    OIDC_OP_JWKS_ENDPOINT = os.environ.get("OIDC_OP_JWKS_ENDPOINT", "")
    if OIDC_RP_SIGN_ALGO.startswith("RS") and not OIDC_OP_JWKS_ENDPOINT:
        raise ImproperlyConfigured(f"OIDC_RP_SIGN_ALGO={OIDC_RP_SIGN_ALGO} needs OIDC_OP_JWKS_ENDPOINT")
    OIDC_RP_SCOPES = os.environ.get("OIDC_RP_SCOPES", "openid email profile")
    OIDC_OP_LOGOUT_ENDPOINT = os.environ.get("OIDC_OP_LOGOUT_ENDPOINT", "")
    # Who may log in: everyone the provider vouches for gets an account (default), or
    # only people an admin created first (RADICAL_OIDC_CREATE_USERS=0).
    OIDC_CREATE_USER = env_bool("RADICAL_OIDC_CREATE_USERS", True)
    # Which claim becomes the Django username (must be unique and stable at the provider).
    RADICAL_OIDC_USERNAME_CLAIM = os.environ.get("RADICAL_OIDC_USERNAME_CLAIM", "preferred_username")
    OIDC_USE_PKCE = env_bool("OIDC_USE_PKCE", True)
    LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"

# --- static files, i18n -------------------------------------------------------------------

STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", VAR_DIR / "staticfiles"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- logging ------------------------------------------------------------------------------

LOG_LEVEL = os.environ.get("RADICAL_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "edge_agent.logs.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "text" if os.environ.get("RADICAL_LOG_FORMAT") == "text" else "json",
            "filters": ["layer_reconnects"],
        },
    },
    "filters": {"layer_reconnects": {"()": "radical_edge_site.logfilters.LayerReconnects"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "bridge_app": {"level": LOG_LEVEL},
        "portal_app": {"level": LOG_LEVEL},
        "radical_edge_site": {"level": LOG_LEVEL},
        "django.request": {"level": "ERROR"},
    },
}
