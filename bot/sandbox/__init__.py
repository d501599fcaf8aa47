"""The sandbox: the whole bot on this machine with no credentials.

`crm-bot sandbox` runs the real web app against the CRM and Slack simulators, with
a browser console that plays Slack (`console.py`), a control panel for
the simulated CRM (`panel.py`), and a seeded agency (`scenario.py`).
"""
