"""Alerting: notifications, channels, routing by tier, and the durable outbox."""
