"""CRM Connect bot: keeps every CRM sub-account connected from Slack."""
