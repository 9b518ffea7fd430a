"""HTTP plumbing shared by every client: sessions, timeouts and the private-network guard."""
