"""borne: radius."""
