"""Requests to sign: one flow (:mod:`.flow`) and the pure state machine it
follows (:mod:`.decide`), serving each request kind through a small adapter
(:mod:`.kind`): cert-manager CertificateRequests (:mod:`.certificaterequest`)
and Kubernetes CertificateSigningRequests (:mod:`.kubecsr`)."""
