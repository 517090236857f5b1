"""cert-manager external issuer signing with an Azure Key Vault key."""
