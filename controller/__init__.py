"""borne: controller."""
