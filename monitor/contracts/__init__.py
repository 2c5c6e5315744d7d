"""The wire and file contracts: inference events, alerts, SLI rows and the internal topic messages."""
