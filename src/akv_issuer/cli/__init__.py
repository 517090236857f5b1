"""`akv-issuer`: a thin command-line shell over the pki and keyvault layers."""
