"""API keys: their format and digests, where they are kept, and how a request proves it holds one."""

from citadel_proxy.auth.bootstrap import bootstrap_admin_key
from citadel_proxy.auth.config import AuthConfig, ConfigKey
from citadel_proxy.auth.guard import require_admin
from citadel_proxy.auth.store import KeyStore, open_key_store

__all__ = ["AuthConfig", "ConfigKey", "KeyStore", "bootstrap_admin_key", "open_key_store", "require_admin"]
