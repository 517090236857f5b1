"""What the controller reports: Prometheus series (:mod:`.metrics`) and audit
records (:mod:`.audit`). Below ``core``: imports only ``api``."""
