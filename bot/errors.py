"""Errors of the bot.

    BotError
    ├── ConfigError          a setting is missing or malformed; start-up stops
    ├── InputError           a user's command text cannot be used; shown to them
    ├── StateError           an OAuth state is missing, forged, expired or reused
    └── CrmError             the CRM returned an error or did not respond
        └── CrmTransientError    a timeout, 5xx or 429 that outlasted the retries

A CrmError carries the HTTP status, the CRM's own message and a classified
`reason` (see `bot.crm.errors.CrmReason`). Callers decide on the reason,
never on the message text.
"""


class BotError(Exception):
    """Base class of every error that the bot raises on purpose."""


class ConfigError(BotError):
    """A setting is missing or malformed."""


class InputError(BotError):
    """Command text that the bot cannot act on; the message is shown to the user."""


class StateError(BotError):
    """An OAuth state that is missing, unknown, expired or already used.

    `kind` is one of "missing", "unknown", "expired", "reused".
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
