"""The controller process: the manager (:mod:`.manager`) creates what every
feature shares (client, Key Vault access, metrics, events, leader fence) and
calls each feature's ``setup()``, then runs their informers and workers."""
