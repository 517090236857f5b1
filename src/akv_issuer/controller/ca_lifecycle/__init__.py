"""ca_lifecycle"""
