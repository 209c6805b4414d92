"""The Action Cable protocol at ``/cable``: ``actioncable-v1-json`` as Rails
speaks it, and AnyCable's ``actioncable-v1-ext-json`` (stream positions,
history, session restore), on the same session core, hub and history as the
Centrifugo protocol. See docs/rails.md."""
