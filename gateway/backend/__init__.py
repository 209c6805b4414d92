"""Calling the backend over HTTP, bounded: what a protocol uses when the
backend decides (Centrifugo's proxies; AnyCable's RPC over HTTP would use
the same caller). Knows HTTP and JSON, no protocol."""
