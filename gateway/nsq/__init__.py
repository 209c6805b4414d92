"""NSQ in and out: the readers (pynsq behind one wrapper), nsqd's loss
counts, the envelope format, ingest into history and the hub, and publishing."""
