"""The session core: what every connection shares whatever its protocol and
transport (the session, its host, the hub, history, presence's interface,
heartbeat, expiry, channel names, and the core's own vocabulary). It imports
no other layer of the gateway (tests/test_layout.py)."""
