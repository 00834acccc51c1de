"""The realtime reference application: a shop's click stream scored on ``add_to_cart``
(``make demo-realtime``)."""
