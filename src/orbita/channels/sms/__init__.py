"""SMS over a Twilio-shaped HTTP API."""
