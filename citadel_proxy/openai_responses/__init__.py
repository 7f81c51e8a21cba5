"""OpenAI's Responses API (`POST /v1/responses`), stateless, for clients and agents that speak it."""
