"""Outbound webhooks signed with HMAC-SHA256."""
