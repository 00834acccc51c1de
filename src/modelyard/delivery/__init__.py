"""Delivery: repository commits become new revisions of the deployments that follow them."""
