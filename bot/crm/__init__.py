"""The CRM client: OAuth links, token exchange and refresh, and location calls."""

from bot.crm.client import CrmClient, RetryPolicy, TokenGrant
from bot.crm.errors import CrmError, CrmReason

__all__ = ["CrmClient", "CrmError", "CrmReason", "RetryPolicy", "TokenGrant"]
