"""Telegram bots (Bot API sendMessage)."""
