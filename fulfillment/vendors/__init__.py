"""The vendors' protocols: one client module per vendor API, behind one port.

    answer        VendorAnswer: what any vendor said about one order, in the fleet's words
    http          the bounded JSON transport both clients share (deadline, size limit, the
                  translation of httpx's errors onto fulfillment.domain.errors)
    atishare      the AT-iShare API (DESIGN.md "AT-iShare vendor API")
    aggregator    the data aggregator serving MTN, Telecel, AT-BigTime (DESIGN.md "Other
                  networks")

Which vendor serves which network is configuration (NETWORK_VENDORS), wired in
fulfillment/runtime/bootstrap.py; nothing above this package names a vendor's protocol.
"""
