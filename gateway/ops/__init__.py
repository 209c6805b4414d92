"""What operators and backends use over HTTP: Centrifugo's server API
(/api), /health, /metrics and the /admin status page."""
