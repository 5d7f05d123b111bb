"""Speculative decoding: proposals (n-gram prompt lookup) verified inside the ordinary engine step."""
