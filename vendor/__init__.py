"""The AT-iShare vendor: the API client (the only module that speaks its protocol) and a simulator."""
