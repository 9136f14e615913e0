"""The admin web process: platform API, dashboard, vendor webhook, metrics and health."""
