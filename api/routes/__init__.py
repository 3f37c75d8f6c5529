"""HTTP routes: thin, each one parses, calls storage or a service, and shapes the answer."""
