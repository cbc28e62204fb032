"""borne: agents."""
