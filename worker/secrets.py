"""Tokens and webhook secrets, encrypted at rest with ENTITY_SYNC_SECRET_KEY.

The key setting holds one or more Fernet keys separated by commas, newest
first: the first encrypts, all of them decrypt, so a key can be rotated by
putting a new one in front, running `entity-sync rotate-key`, and then
dropping the old one.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from worker.errors import ConfigError, SecretError
from worker.redaction import register_secret
from worker.settings import Settings


def generate_key() -> str:
    """A fresh Fernet key for ENTITY_SYNC_SECRET_KEY."""
    return Fernet.generate_key().decode()


class SecretBox:
    """Encrypts and decrypts secrets with the configured keys."""

    def __init__(self, keys: str) -> None:
        fernets = [Fernet(key.strip().encode()) for key in keys.split(",") if key.strip()]
        if not fernets:
            raise ConfigError("ENTITY_SYNC_SECRET_KEY: holds no key")
        self._box = MultiFernet(fernets)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box for ENTITY_SYNC_SECRET_KEY; ConfigError when it is unset."""
        if settings.secret_key is None:
            raise ConfigError(
                "ENTITY_SYNC_SECRET_KEY: not set; tokens are encrypted at rest with it "
                "(generate one with `entity-sync keygen`)"
            )
        return cls(settings.secret_key.get_secret_value())

    def encrypt(self, plaintext: str) -> str:
        """Ciphertext (text) of a secret."""
        return self._box.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """The secret; SecretError when no configured key opens it."""
        try:
            plaintext = self._box.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretError(
                "a stored secret cannot be decrypted with ENTITY_SYNC_SECRET_KEY "
                "(was the key replaced instead of rotated?)"
            ) from None
        # Every secret in use is known to the Sentry scrubber, whatever the
        # variable or message it ends up in.
        register_secret(plaintext)
        return plaintext

    def rotate(self, ciphertext: str) -> str:
        """The same secret re-encrypted with the newest key."""
        try:
            return self._box.rotate(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretError("a stored secret cannot be decrypted for rotation") from None
