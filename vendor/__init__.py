"""The AT-iShare vendor: its API client (the one module speaking its protocol) and a simulator."""
