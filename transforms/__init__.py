"""Novation's Beam composites (one per concern) and the pure functions beneath them."""
