"""The one list of keys whose values are secrets: audit entries refuse them, stored API
answers (Idempotency-Key replays) drop them."""

SECRET_KEYS = frozenset({"password", "token", "key", "secret", "link"})


def is_secret_key(key) -> bool:
    return str(key).lower() in SECRET_KEYS
