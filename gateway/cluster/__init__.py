"""This node among the others: the control bus (an NSQ topic every node
reads), peers, the cluster-wide presence table, and peering (heartbeats,
presence exchange, the server API's cluster-wide actions, surveys)."""
