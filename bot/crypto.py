"""Encryption of tokens at rest with Fernet.

TOKEN_ENCRYPTION_KEY contains one key or several, newest first. New values are
encrypted with the newest key and every listed key can decrypt, so a key is
rotated by putting the new one in front and re-encrypting with `rotate`.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bot.errors import BotError, ConfigError


class DecryptionError(BotError):
    """A stored token cannot be decrypted with any configured key."""


class TokenCipher:
    def __init__(self, keys: str | None) -> None:
        if not keys:
            raise ConfigError("TOKEN_ENCRYPTION_KEY is required to store tokens. Generate one with "
                              "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'")
        self._fernet = MultiFernet([Fernet(key.strip().encode()) for key in keys.split(",") if key.strip()])

    def __repr__(self) -> str:
        return "TokenCipher(keys=<redacted>)"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as error:
            raise DecryptionError("A stored token cannot be decrypted: TOKEN_ENCRYPTION_KEY does not hold the key it was "
                                  "encrypted with. Put the old key after the new one, comma-separated.") from error

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt a value with the newest key."""
        return self._fernet.rotate(ciphertext.encode()).decode()
