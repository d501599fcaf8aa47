"""Refresh one connection from a separate process, for the cross-process refresh test.

Usage: python -m tests.bot.refresh_worker DATABASE_URL CRM_URL CLIENT_ID CLIENT_SECRET CONNECTION_ID START_AT
The encryption key comes from TOKEN_ENCRYPTION_KEY. The process waits until
the epoch time START_AT, so that every worker requests the row lock at once,
then prints the version of the tokens that it got.
"""

from __future__ import annotations

import os
import sys
import time

from bot.crm import CrmClient
from bot.crypto import TokenCipher
from bot.tokens import TokenStore
from storage.db import make_engine


def main(database_url: str, crm_url: str, client_id: str, client_secret: str, connection_id: str, start_at: str) -> None:
    engine = make_engine(database_url)
    crm = CrmClient(api_url=crm_url, authorize_url=f"{crm_url}/oauth/chooselocation", client_id=client_id,
                    client_secret=client_secret, scopes="", redirect_uri="http://127.0.0.1:9/oauth/callback")
    store = TokenStore(engine=engine, cipher=TokenCipher(os.environ["TOKEN_ENCRYPTION_KEY"]), crm=crm)

    time.sleep(max(0.0, float(start_at) - time.time()))
    tokens = store.refresh(int(connection_id))
    print(tokens.version)


if __name__ == "__main__":
    main(*sys.argv[1:])
