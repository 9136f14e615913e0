"""Admin notifications: stored in PostgreSQL, POSTed to ADMIN_WEBHOOK_URL, logged."""
