"""A local Azure Key Vault emulator speaking the subset of the REST API the SDK uses."""
