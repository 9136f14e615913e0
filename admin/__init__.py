"""The admin surface: use cases shared by the web process (dashboard, platform API) and the CLI."""
