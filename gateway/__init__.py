"""pushgate: a real-time push gateway from NSQ to WebSocket clients."""
__version__ = "0.1.0"
