"""The Centrifugo client protocol (v2): its model, its two encodings (JSON and
Protobuf) behind one :class:`~gateway.protocols.centrifugo.codec.Codec` interface, and
the session that speaks it (:class:`~gateway.protocols.centrifugo.session.CentrifugoSession`).
No I/O here: transports move the bytes."""
