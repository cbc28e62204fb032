"""borne: captive_portal."""
