"""The HTTP servers: CloudEvents ingress and egress, the model server and the model host,
the event display; and serving a model version from this machine (:mod:`.deployers`)."""
