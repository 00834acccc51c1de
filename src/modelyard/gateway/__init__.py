"""The gateway: the data plane process between clients and replicas."""
