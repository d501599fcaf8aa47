from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from bot.crypto import DecryptionError, TokenCipher
from bot.errors import ConfigError


def test_round_trip():
    cipher = TokenCipher(Fernet.generate_key().decode())

    encrypted = cipher.encrypt("secret-token")

    assert encrypted != "secret-token"
    assert cipher.decrypt(encrypted) == "secret-token"


def test_key_rotation_reads_old_values():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    encrypted = TokenCipher(old).encrypt("secret-token")
    rotated_cipher = TokenCipher(f"{new},{old}")

    rotated = rotated_cipher.rotate(encrypted)

    assert rotated_cipher.decrypt(encrypted) == "secret-token"
    assert TokenCipher(new).decrypt(rotated) == "secret-token"


def test_wrong_key_names_fix():
    encrypted = TokenCipher(Fernet.generate_key().decode()).encrypt("secret-token")

    with pytest.raises(DecryptionError, match="Put the old key after the new one"):
        TokenCipher(Fernet.generate_key().decode()).decrypt(encrypted)


def test_missing_key_rejected():
    with pytest.raises(ConfigError, match="TOKEN_ENCRYPTION_KEY is required"):
        TokenCipher(None)


def test_repr_hides_keys():
    key = Fernet.generate_key().decode()

    assert key not in repr(TokenCipher(key))
