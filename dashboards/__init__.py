"""borne: dashboards."""
