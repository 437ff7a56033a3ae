"""Mobile push over an FCM-v1-shaped HTTP API."""
