"""Composition: builds the engine, clients and services from settings, once per process."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from bot.callback import CallbackHandler
from bot.connections import ConnectionService
from bot.crm import CrmClient
from bot.crypto import TokenCipher
from bot.lifecycle import Lifecycle
from bot.reset import ResetService
from bot.settings import Settings
from bot.slack_gateway import SlackGateway, make_web_client
from bot.webhooks import WebhookService
from storage.db import make_engine


@dataclass
class Services:
    settings: Settings
    engine: Engine
    crm: CrmClient
    slack: SlackGateway
    connections: ConnectionService
    callback: CallbackHandler
    lifecycle: Lifecycle
    resets: ResetService
    webhooks: WebhookService

    def close(self) -> None:
        self.crm.close()
        self.engine.dispose()


def build_services(settings: Settings, *, engine: Engine | None = None) -> Services:
    # Storage
    engine = engine or make_engine(settings.database_url)
    cipher = TokenCipher(settings.token_encryption_key)

    # Outbound clients
    crm = CrmClient(
        api_url=settings.crm_api_url,
        authorize_url=settings.crm_authorize_url,
        client_id=settings.crm_client_id,
        client_secret=settings.crm_client_secret,
        scopes=settings.crm_scopes,
        redirect_uri=settings.redirect_uri,
    )
    slack = SlackGateway(make_web_client(token=settings.slack_bot_token, base_url=settings.slack_api_url))

    # Service layer
    connections = ConnectionService(settings=settings, engine=engine, cipher=cipher, crm=crm, slack=slack)
    lifecycle = Lifecycle(settings=settings, tokens=connections.tokens, connections=connections)
    resets = ResetService(lifecycle=lifecycle)
    services = Services(settings=settings, engine=engine, crm=crm, slack=slack, connections=connections,
                        callback=CallbackHandler(connections), lifecycle=lifecycle, resets=resets,
                        webhooks=WebhookService(settings=settings, lifecycle=lifecycle))
    resets.agency_sync = lambda agency_id, user_id: _run_agency_sync(services, agency_id, user_id)
    return services


def _run_agency_sync(services: Services, agency_id: int, user_id: str) -> str:
    from bot.sync import run_agency_sync

    return run_agency_sync(services, agency_id, requester_user_id=user_id).text
