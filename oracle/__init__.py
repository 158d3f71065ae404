"""The Tributa oracle: ingests task events, routes jobs, verifies, attributes and settles."""
