"""Settings come from the environment; production refuses to start without a secret."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_check(tmp_path, **env):
    clean = {k: v for k, v in os.environ.items()
             if k not in {"SECRET_KEY", "VDI_ENV", "DATABASE_URL", "DEBUG", "DJANGO_SETTINGS_MODULE"}}
    clean.update(VDI_DATA_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=120)


def test_production_requires_a_secret_key(tmp_path):
    result = run_check(tmp_path)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_production_with_a_secret_passes_the_deploy_check(tmp_path):
    result = run_check(tmp_path, SECRET_KEY="x" * 60, ALLOWED_HOSTS="vdi.example.com")
    assert result.returncode == 0, result.stderr
    clean = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "VDI_ENV"}}
    clean.update(VDI_ENV="production", VDI_DATA_DIR=str(tmp_path),
                 SECRET_KEY="x" * 60 + "-0123456789abcdefABCDEF", ALLOWED_HOSTS="vdi.example.com")
    deploy = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level",
                             "WARNING"], cwd=ROOT, env=clean, capture_output=True, text=True,
                            timeout=120)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr


def test_demo_profile_defaults(tmp_path):
    result = run_check(tmp_path, VDI_ENV="demo")
    assert result.returncode == 0, result.stderr


def test_unknown_profile_is_refused(tmp_path):
    result = run_check(tmp_path, VDI_ENV="staging")
    assert result.returncode != 0 and "VDI_ENV must be" in result.stderr


def test_debug_is_off_unless_asked(settings):
    assert settings.DEBUG is False


def test_production_security_settings(tmp_path):
    """What check --deploy can't see: the proxy's HTTPS header is honoured, cookies are
    secure, hosts are strict, logs are JSON, logins lock out."""
    script = ("import django; from django.conf import settings as s; django.setup(); "
              "print(s.SECURE_PROXY_SSL_HEADER, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE,"
              " s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.ALLOWED_HOSTS, s.LOG_FORMAT,"
              " s.AXES_FAILURE_LIMIT, sep='|')")
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "VDI_ENV"}}
    env.update(VDI_ENV="production", VDI_DATA_DIR=str(tmp_path), SECRET_KEY="x" * 60,
               ALLOWED_HOSTS="vdi.example.com", DJANGO_SETTINGS_MODULE="config.settings")
    env.pop("LOG_FORMAT", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split("|") == [
        "('HTTP_X_FORWARDED_PROTO', 'https')", "True", "True", "True", "31536000",
        "['vdi.example.com']", "json", "5"]


def test_tenant_network_settings_are_checked_at_start(tmp_path):
    for env, message in (
        ({"VDI_TENANT_NETWORK_RANGE": "8.8.0.0/16"}, "must be a private IPv4 range"),
        ({"VDI_TENANT_NETWORK_RANGE": "10.0.0.0/25"}, "at least one /24"),
        ({"VDI_TENANT_NETWORK_RANGE": "not-a-range"}, "VDI_TENANT_NETWORK_RANGE"),
        ({"VDI_TENANT_NETWORK_NAME": "Tenant_"}, "VDI_TENANT_NETWORK_NAME must be"),
        ({"VDI_TENANT_NETWORK_NAME": "a" * 11}, "VDI_TENANT_NETWORK_NAME must be"),
    ):
        result = run_check(tmp_path, VDI_ENV="demo", **env)
        assert result.returncode != 0 and message in result.stderr, (env, result.stderr[-500:])
    assert run_check(tmp_path, VDI_ENV="demo", VDI_TENANT_NETWORK_RANGE="172.16.0.0/12",
                     VDI_TENANT_NETWORK_NAME="desk-").returncode == 0
