"""Slack surfaces and web routes. Each module acks, parses, calls the service layer and renders."""
