"""The pure core: order states, parsing and the retry rule. No I/O here."""
