"""Signal sources: each takes samples of one or more signals for one service."""
