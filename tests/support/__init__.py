"""Test support code shared by the test tiers (imported as ``support.<module>``)."""
