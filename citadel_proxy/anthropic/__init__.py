"""Anthropic's Messages API, spoken to clients (the anthropic SDKs, coding agents)."""
