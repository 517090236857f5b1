"""issuers"""
